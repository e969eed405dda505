package session

import (
	"context"
	"hash/maphash"
	"sync"

	"github.com/open-autoglm/autoglm/app/collections"
	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/protocol"
)

// SharedSender is a Sender that can also send a message shared by many
// connections, using the message's shared encodings (protocol.Shared).
type SharedSender interface {
	Sender
	SendShared(ctx context.Context, m *protocol.Shared) error
}

// views shares, among the sessions of the process, the delta of each change
// as each view of its document shows it: the watchers of a document fall
// into a few views (all of it, or without some fields), and each view's
// delta is filtered and encoded once per change, not once per watcher.
// Bounded (direct-mapped slots, like fullDocs); entries are per backend, as
// a change's version names it only within its store.
var views = &viewCache{seed: maphash.MakeSeed()}

type changeKey struct {
	b   Backend
	doc string
	v   int64
}

type viewCache struct {
	seed  maphash.Seed
	mu    [64]sync.Mutex // striped over the slots
	slots [4096]viewSlot
}

// viewSlot holds one change's deltas, one per view seen so far.
type viewSlot struct {
	key   changeKey
	views []viewDelta
}

type viewDelta struct {
	view string
	msg  *protocol.Shared
}

// delta returns c as a delta message shown through view, shared with the
// other watchers of the same view.
func (vc *viewCache) delta(b Backend, c core.Change, view collections.View) *protocol.Shared {
	i := (maphash.String(vc.seed, c.Doc) + uint64(c.Version)) % uint64(len(vc.slots))
	key := changeKey{b, c.Doc, c.Version}
	mu := &vc.mu[i%uint64(len(vc.mu))]
	mu.Lock()
	defer mu.Unlock()
	slot := &vc.slots[i]
	if slot.key != key {
		*slot = viewSlot{key: key}
	}
	for _, d := range slot.views {
		if d.view == view.Key() {
			return d.msg
		}
	}
	m := protocol.Delta(c)
	m.Ops = view.Ops(c.Ops)
	sh := protocol.NewShared(m)
	slot.views = append(slot.views, viewDelta{view.Key(), sh})
	return sh
}
