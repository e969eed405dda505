package session

import (
	"context"
	"hash/fnv"
	"sync"

	"github.com/open-autoglm/autoglm/app/core"
)

// fullDocs shares the documents loaded for full subscriptions among all the
// sessions of the process, so the watchers of one document cost one store
// read per change, not one each: the full-push mode then pays for what it
// sends, not for a read per watcher. Bounded (direct-mapped slots); loads of
// the same document at the same time are made once. Entries are per backend
// (a process may serve several stores, as tests do), so a Backend must be a
// comparable value such as a pointer.
var fullDocs = &docCache{flight: map[cacheKey]*docLoad{}}

type cacheKey struct {
	b   Backend
	doc string
}

type docCache struct {
	mu     sync.Mutex
	slots  [512]cacheSlot
	flight map[cacheKey]*docLoad
}

type cacheSlot struct {
	key cacheKey
	d   *core.Document
}

type docLoad struct {
	done chan struct{}
	d    *core.Document
	err  error
}

// load returns the stored document doc at version atLeast or later. The
// returned document is shared: callers must not modify it.
func (c *docCache) load(ctx context.Context, b Backend, k core.Key, doc string, atLeast int64) (*core.Document, error) {
	h := fnv.New32a()
	h.Write([]byte(doc))
	i := int(h.Sum32() % uint32(len(c.slots)))
	key := cacheKey{b, doc}
	c.mu.Lock()
	if s := c.slots[i]; s.key == key && s.d != nil && s.d.Version >= atLeast {
		c.mu.Unlock()
		return s.d, nil
	}
	if f, ok := c.flight[key]; ok {
		c.mu.Unlock()
		select {
		case <-f.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if f.err == nil && f.d != nil && f.d.Version >= atLeast {
			return f.d, nil
		}
		st, err := b.Load(ctx, k) // that load began before this version
		return st.Doc, err
	}
	f := &docLoad{done: make(chan struct{})}
	c.flight[key] = f
	c.mu.Unlock()
	st, err := b.Load(ctx, k)
	f.d, f.err = st.Doc, err
	c.mu.Lock()
	delete(c.flight, key)
	if s := c.slots[i]; err == nil && st.Doc != nil && (s.key != key || s.d == nil || s.d.Version < st.Doc.Version) {
		c.slots[i] = cacheSlot{key: key, d: st.Doc}
	}
	c.mu.Unlock()
	close(f.done)
	return st.Doc, err
}
