// Package inmem provides in-memory implementations of the ports (core.Store,
// core.Bus, and kv.State for the other state), with the same ETag semantics
// as a Dapr state store, for fast tests without a sidecar and for whole
// replicas in process (service.MemoryDeps). Production always goes through
// Dapr.
package inmem

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"

	"github.com/open-autoglm/autoglm/app/core"
)

// Store is a core.Store in memory. It keeps its own deep copies of what is
// committed and hands out fresh ones (copy.go), so callers never share
// memory with it, and every write changes the ETag.
type Store struct {
	mu    sync.Mutex
	docs  map[core.Key]stored
	log   map[core.Key]map[int64]core.Change
	index map[string][]string
	etag  int64

	// BeforeCommit, if set, runs inside Commit before the ETag check (tests
	// use it to slip in a competing write).
	BeforeCommit func(c core.Commit)
	// Fail, if set, makes every call fail with it.
	Fail error
}

type stored struct {
	doc  *core.Document // never handed out: Load returns copies
	etag string
}

var _ core.Store = (*Store)(nil)

// NewStore returns an empty store.
func NewStore() *Store {
	return &Store{docs: map[core.Key]stored{}, log: map[core.Key]map[int64]core.Change{}, index: map[string][]string{}}
}

// HoldNextCommit makes the next Commit wait, before its ETag check, until
// release is called; entered is closed when that commit has started. Tests
// use it to queue work behind a write in flight. It sets BeforeCommit.
func (s *Store) HoldNextCommit() (entered <-chan struct{}, release func()) {
	in, gate := make(chan struct{}), make(chan struct{})
	first := true
	s.BeforeCommit = func(core.Commit) {
		if first {
			first = false
			close(in)
			<-gate
		}
	}
	return in, func() { close(gate) }
}

// Load implements core.Store.
func (s *Store) Load(_ context.Context, k core.Key) (core.Stored, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.Fail != nil {
		return core.Stored{}, s.Fail
	}
	st, ok := s.docs[k]
	if !ok {
		return core.Stored{}, nil
	}
	d := copyDocument(st.doc)
	d.Key = k
	return core.Stored{Doc: d, ETag: st.etag}, nil
}

// stale reports whether a write guarded by etag ("": the key must not
// exist) misses the current record, as a Dapr state store's ETag check
// refuses it.
func stale(etag string, exists bool, current string) bool {
	return (etag == "" && exists) || (etag != "" && current != etag)
}

// Commit implements core.Store.
func (s *Store) Commit(_ context.Context, c core.Commit) error {
	if s.BeforeCommit != nil {
		s.BeforeCommit(c)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.Fail != nil {
		return s.Fail
	}
	cur, exists := s.docs[c.Key]
	if stale(c.ETag, exists, cur.etag) {
		return fmt.Errorf("commit %s: %w", c.Key, core.ErrVersionConflict)
	}
	var cp copier
	doc := cp.document(c.Doc)
	var archive []core.Change
	for _, ch := range c.Archive {
		if ch.Version >= doc.LogStart {
			archive = append(archive, cp.change(ch))
		}
	}
	if cp.err != nil {
		return fmt.Errorf("commit %s: %w", c.Key, cp.err)
	}
	s.etag++
	s.docs[c.Key] = stored{doc: doc, etag: strconv.FormatInt(s.etag, 10)}
	lg := s.log[c.Key]
	if lg == nil {
		lg = map[int64]core.Change{}
		s.log[c.Key] = lg
	}
	for _, ch := range archive {
		lg[ch.Version] = ch
	}
	for v := c.TrimFrom; c.TrimFrom > 0 && v <= c.TrimTo; v++ {
		delete(lg, v)
	}
	ids := s.index[c.Key.Collection]
	i, found := slices.BinarySearch(ids, c.Key.ID)
	switch {
	case c.IndexAdd && !found:
		s.index[c.Key.Collection] = slices.Insert(ids, i, c.Key.ID)
	case c.IndexRemove && found:
		s.index[c.Key.Collection] = slices.Delete(ids, i, i+1)
	}
	return nil
}

// Changes implements core.Store.
func (s *Store) Changes(_ context.Context, k core.Key, from, to int64) ([]core.Change, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.Fail != nil {
		return nil, s.Fail
	}
	var out []core.Change
	v := max(from, 1)
	for ; v <= to; v++ {
		ch, ok := s.log[k][v]
		if !ok {
			break
		}
		out = append(out, copyChange(ch))
	}
	if v <= to {
		if st, ok := s.docs[k]; ok {
			for _, ch := range st.doc.Tail {
				if ch.Version == v && v <= to {
					out = append(out, copyChange(ch))
					v++
				}
			}
		}
	}
	return out, nil
}

// LogLen returns how many log entries the store holds for k.
func (s *Store) LogLen(k core.Key) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.log[k])
}

// List implements core.Store (one page of everything; cursors are offsets).
func (s *Store) List(_ context.Context, coll, cursor string, limit int) (core.Page, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := s.index[coll]
	start := 0
	if cursor != "" {
		n, err := strconv.Atoi(cursor)
		if err != nil || n < 0 {
			return core.Page{}, core.Errorf(core.CodeBadRequest, "malformed cursor %q", cursor)
		}
		start = min(n, len(ids))
	}
	end := min(start+limit, len(ids))
	p := core.Page{IDs: slices.Clone(ids[start:end])}
	if end < len(ids) {
		p.Next = strconv.Itoa(end)
	}
	return p, nil
}

// Documents loads the stored documents of coll named by ids, in order,
// leaving out those that do not exist (with List, it serves the REST list in
// process).
func (s *Store) Documents(ctx context.Context, coll string, ids []string) ([]*core.Document, error) {
	out := make([]*core.Document, 0, len(ids))
	for _, id := range ids {
		st, err := s.Load(ctx, core.Key{Collection: coll, ID: id})
		if err != nil {
			return nil, err
		}
		if st.Doc != nil {
			out = append(out, st.Doc)
		}
	}
	return out, nil
}

// Bus records published changes and presence and forwards them to Deliver.
type Bus struct {
	mu       sync.Mutex
	Changes  []core.Change
	Presence []core.Presence
	// Deliver, if set, receives every publish (as a broadcast would).
	Deliver func([]core.Change)
	// Drop, if set and true for a change, loses it (as a broker might).
	Drop func(core.Change) bool
}

var _ core.Bus = (*Bus)(nil)

// Publish implements core.Bus.
func (b *Bus) Publish(_ context.Context, changes []core.Change) error {
	b.mu.Lock()
	b.Changes = append(b.Changes, changes...)
	deliver, drop := b.Deliver, b.Drop
	b.mu.Unlock()
	if deliver == nil {
		return nil
	}
	var out []core.Change
	for _, c := range changes {
		if drop == nil || !drop(c) {
			out = append(out, c)
		}
	}
	if len(out) > 0 {
		deliver(out)
	}
	return nil
}

// Published returns a copy of the changes published so far.
func (b *Bus) Published() []core.Change {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.Changes)
}

// PublishPresence implements core.Bus.
func (b *Bus) PublishPresence(_ context.Context, ps []core.Presence) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.Presence = append(b.Presence, ps...)
	return nil
}

// Broker is a broadcast topic in memory: every publish reaches every
// replica joined to it, the publisher included, as the Dapr topic delivers
// to every replica. Each member receives in publish order on its own
// goroutine, so a publisher never waits for a receiver.
type Broker struct {
	mu      sync.Mutex
	members map[*member]struct{}
}

var _ core.Bus = (*Broker)(nil)

type member struct {
	changes  func([]core.Change)
	presence func([]core.Presence)

	mu     sync.Mutex
	queue  []func()
	wake   chan struct{}
	closed bool
}

// Join adds a receiver: changes and presence (either may be nil) are called
// with what any member publishes from now on. leave removes it and waits
// until its deliveries in progress have returned.
func (b *Broker) Join(changes func([]core.Change), presence func([]core.Presence)) (leave func()) {
	m := &member{changes: changes, presence: presence, wake: make(chan struct{}, 1)}
	done := make(chan struct{})
	go m.run(done)
	b.mu.Lock()
	if b.members == nil {
		b.members = map[*member]struct{}{}
	}
	b.members[m] = struct{}{}
	b.mu.Unlock()
	return func() {
		b.mu.Lock()
		delete(b.members, m)
		b.mu.Unlock()
		m.mu.Lock()
		m.closed = true
		m.mu.Unlock()
		select {
		case m.wake <- struct{}{}:
		default:
		}
		<-done
	}
}

func (m *member) run(done chan struct{}) {
	defer close(done)
	for range m.wake {
		m.mu.Lock()
		q, closed := m.queue, m.closed
		m.queue = nil
		m.mu.Unlock()
		if closed {
			return
		}
		for _, f := range q {
			f()
		}
	}
}

func (m *member) push(f func()) {
	m.mu.Lock()
	m.queue = append(m.queue, f)
	m.mu.Unlock()
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// fanOut hands a copy of items to the receiver that to picks from each
// member (nil: none).
func fanOut[T any](b *Broker, items []T, to func(*member) func([]T)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for m := range b.members {
		if receive := to(m); receive != nil {
			cp := slices.Clone(items)
			m.push(func() { receive(cp) })
		}
	}
}

// Publish implements core.Bus.
func (b *Broker) Publish(_ context.Context, changes []core.Change) error {
	fanOut(b, changes, func(m *member) func([]core.Change) { return m.changes })
	return nil
}

// PublishPresence implements core.Bus.
func (b *Broker) PublishPresence(_ context.Context, ps []core.Presence) error {
	fanOut(b, ps, func(m *member) func([]core.Presence) { return m.presence })
	return nil
}
