package session

import (
	"hash/maphash"
	"sync"

	"github.com/open-autoglm/autoglm/app/collections"
	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/merge"
)

// views shares, among the sessions of the process, the ops of each change
// as each view of its document shows them: the watchers of a document fall
// into a few views (the fields they may read), and each view's ops are
// worked out once per change, not once per watcher. Bounded (direct-mapped
// slots, like fullDocs); entries are per backend, as a change's version
// names it only within its store.
var views = &viewCache{seed: maphash.MakeSeed()}

type viewKey struct {
	b    Backend
	doc  string
	v    int64
	view string
}

type viewCache struct {
	seed  maphash.Seed
	mu    [16]sync.Mutex // striped over the slots
	slots [1024]viewSlot
}

type viewSlot struct {
	key viewKey
	ops []merge.FieldOp
}

// ops returns c's ops as view shows them. The result is shared: callers
// must not modify it.
func (vc *viewCache) ops(b Backend, c core.Change, view collections.View) []merge.FieldOp {
	var h maphash.Hash
	h.SetSeed(vc.seed)
	h.WriteString(c.Doc)
	h.WriteString(view.Key())
	i := (h.Sum64() + uint64(c.Version)) % uint64(len(vc.slots))
	key := viewKey{b, c.Doc, c.Version, view.Key()}
	mu := &vc.mu[i%uint64(len(vc.mu))]
	mu.Lock()
	if s := vc.slots[i]; s.key == key {
		mu.Unlock()
		return s.ops
	}
	mu.Unlock()
	ops := view.Ops(c.Ops)
	mu.Lock()
	vc.slots[i] = viewSlot{key: key, ops: ops}
	mu.Unlock()
	return ops
}
