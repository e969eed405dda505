// Package live keeps an in-memory index of the collections that are
// queried on this replica and matches every committed change against the
// live queries on its collection, with no store read per change per query.
//
// A collection's index is loaded from the store's listing the first time it
// is queried, and kept up to date from the change stream the hub observes:
// local commits, broadcasts from other replicas and anti-entropy repairs
// (Engine.Observe). Changes are applied to the indexed data in version
// order; a change that does not follow the indexed version (a lost
// broadcast, a summary without its ops) is repaired with one store read of
// that document, shared by all the queries on it.
//
// A live query holds its current result window. For each change of a
// document of its collection it decides, in memory, whether the document
// enters the window, is updated in it, or leaves it (no longer matching,
// deleted, unreadable, or pushed out of a limit window, which brings the
// next one in) and emits events to its sink.
package live

import (
	"context"
	"encoding/json"
	"slices"
	"sync"
	"time"

	"github.com/open-autoglm/autoglm/app/collections"
	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/merge"
	"github.com/open-autoglm/autoglm/app/query"
)

// Source is what the index reads from the store: the listing to load a
// collection, and single documents to repair a gap.
type Source interface {
	core.Lister
	Load(ctx context.Context, k core.Key) (core.Stored, error)
}

// Doc is one indexed document at one version. It is never modified once
// indexed: a change makes a new Doc. Data must not be modified by callers.
type Doc struct {
	ID      string
	Version int64
	Deleted bool
	Data    map[string]any
}

func (d *Doc) item() query.Item { return query.Item{ID: d.ID, Data: d.Data} }

// Kind is what happened to a document in a query's result.
type Kind uint8

const (
	// Added: the document entered the result (send its snapshot).
	Added Kind = iota + 1
	// Changed: a document in the result changed; Delta is the change when
	// it directly follows the version the result held, else nil (send a
	// snapshot).
	Changed
	// Removed: the document left the result; Why says why.
	Removed
)

// Reasons a document left a result.
const (
	WhyNoMatch  = "no_match"
	WhyDeleted  = "deleted"
	WhyHidden   = "not_readable"
	WhyLimit    = "limit"
	WhyResynced = "resync"
)

// Event is one entry of a query's result changing.
type Event struct {
	Kind  Kind
	Doc   *Doc
	Delta *core.Change
	Why   string
}

// Admit reports whether the reader of a live query may see a document
// with data, including every field the query reads. A document it refuses
// is not a result.
type Admit func(data map[string]any) bool

// Sink receives the events of one change for one query, in order. It runs
// on the engine's goroutine and must not block.
type Sink func(s *Sub, evs []Event)

// Engine is the index and the live queries of one replica.
type Engine struct {
	src Source

	mu    sync.Mutex
	colls map[string]*coll

	qmu   sync.Mutex
	queue []core.Change
	// queued counts the changes observed, applied those applied; applied
	// signals each batch.
	queued, applied uint64
	idle            *sync.Cond
	wake            chan struct{}
	stop            chan struct{}
	done            chan struct{}
}

type coll struct {
	name   string
	loaded chan struct{} // closed once ready or failed
	err    error

	mu      sync.Mutex
	ready   bool
	docs    map[string]*Doc
	subs    map[*Sub]struct{}
	pending []core.Change // arrived while loading
	// keyed holds the live queries with an equality condition, by its
	// path and value key: a change concerns only those keyed by the
	// document's value before or after it (and the unkeyed ones).
	keyed   map[string]map[string]map[*Sub]struct{}
	unkeyed map[*Sub]struct{}
	// eq indexes document ids by the value key at each path an equality
	// condition of a query has used, to run such queries on candidates.
	eq map[string]map[string]map[string]struct{}
}

// New starts an engine over src; Close stops it.
func New(src Source) *Engine {
	e := &Engine{src: src, colls: map[string]*coll{}, wake: make(chan struct{}, 1),
		stop: make(chan struct{}), done: make(chan struct{})}
	e.idle = sync.NewCond(&e.qmu)
	go e.run()
	return e
}

// Close stops applying changes.
func (e *Engine) Close() {
	select {
	case <-e.stop:
	default:
		close(e.stop)
	}
	<-e.done
}

// Observe takes committed changes (a hub change observer). It never
// blocks: changes are applied on the engine's goroutine.
func (e *Engine) Observe(cs []core.Change) {
	e.qmu.Lock()
	e.queue = append(e.queue, cs...)
	e.queued += uint64(len(cs))
	e.qmu.Unlock()
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

func (e *Engine) run() {
	defer func() {
		close(e.done)
		e.qmu.Lock()
		e.idle.Broadcast()
		e.qmu.Unlock()
	}()
	for {
		select {
		case <-e.stop:
			return
		case <-e.wake:
		}
		e.qmu.Lock()
		batch := e.queue
		e.queue = nil
		e.qmu.Unlock()
		for _, c := range batch {
			k, err := core.ParseKey(c.Doc)
			if err != nil {
				continue
			}
			e.mu.Lock()
			cl := e.colls[k.Collection]
			e.mu.Unlock()
			if cl == nil {
				continue // not indexed here
			}
			cl.mu.Lock()
			if cl.ready {
				cl.apply(e.src, k, c)
			} else {
				cl.pending = append(cl.pending, c)
			}
			cl.mu.Unlock()
		}
		e.qmu.Lock()
		e.applied += uint64(len(batch))
		e.idle.Broadcast()
		e.qmu.Unlock()
	}
}

// Flush waits until every change observed before the call is applied.
func (e *Engine) Flush() {
	e.qmu.Lock()
	defer e.qmu.Unlock()
	target := e.queued
	for e.applied < target {
		select {
		case <-e.stop:
			return
		default:
		}
		e.idle.Wait()
	}
}

// Indexed reports whether collection name is indexed (loaded) here.
func (e *Engine) Indexed(name string) bool {
	e.mu.Lock()
	cl := e.colls[name]
	e.mu.Unlock()
	if cl == nil {
		return false
	}
	cl.mu.Lock()
	defer cl.mu.Unlock()
	return cl.ready
}

// collection returns the index of name, loading it on first use.
func (e *Engine) collection(ctx context.Context, name string) (*coll, error) {
	e.mu.Lock()
	cl := e.colls[name]
	if cl == nil {
		cl = &coll{name: name, loaded: make(chan struct{}), subs: map[*Sub]struct{}{},
			keyed: map[string]map[string]map[*Sub]struct{}{}, unkeyed: map[*Sub]struct{}{},
			eq: map[string]map[string]map[string]struct{}{}}
		e.colls[name] = cl
		go e.load(cl)
	}
	e.mu.Unlock()
	select {
	case <-cl.loaded:
	case <-ctx.Done():
		return nil, core.Errorf(core.CodeUnavailable, "loading the index of %s: %v", name, ctx.Err())
	}
	if cl.err != nil {
		return nil, cl.err
	}
	return cl, nil
}

// load reads the whole collection from the store's listing, then applies
// what was committed meanwhile. A failure forgets the collection, so the
// next query tries again.
func (e *Engine) load(cl *coll) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	docs := map[string]*Doc{}
	cursor := ""
	for {
		page, err := e.src.List(ctx, cl.name, cursor, 500)
		if err == nil {
			var ds []*core.Document
			ds, err = e.src.Documents(ctx, cl.name, page.IDs)
			for _, d := range ds {
				docs[d.Key.ID] = fromStore(d.Key.ID, d)
			}
		}
		if err != nil {
			e.mu.Lock()
			delete(e.colls, cl.name)
			e.mu.Unlock()
			cl.err = err
			close(cl.loaded)
			return
		}
		if page.Next == "" {
			break
		}
		cursor = page.Next
	}
	cl.mu.Lock()
	cl.docs = docs
	for _, c := range cl.pending {
		if k, err := core.ParseKey(c.Doc); err == nil {
			cl.apply(e.src, k, c)
		}
	}
	cl.pending = nil
	cl.ready = true
	cl.mu.Unlock()
	close(cl.loaded)
}

func fromStore(id string, d *core.Document) *Doc {
	return &Doc{ID: id, Version: d.Version, Deleted: d.Deleted, Data: clone(d.Data())}
}

func clone(data map[string]any) map[string]any {
	b, err := json.Marshal(data)
	if err != nil {
		return map[string]any{}
	}
	var out map[string]any
	if json.Unmarshal(b, &out) != nil || out == nil {
		return map[string]any{}
	}
	return out
}

// apply indexes change c of document k and tells the live queries. Held:
// cl.mu.
func (cl *coll) apply(src Source, k core.Key, c core.Change) {
	old := cl.docs[k.ID]
	if old != nil && c.Version <= old.Version {
		return // already indexed
	}
	var nd *Doc
	delta := &c
	switch {
	case c.Pull:
	case c.Deleted:
		nd = &Doc{ID: k.ID, Version: c.Version, Deleted: true}
	case c.Created:
		data := map[string]any{}
		if merge.ApplyPlain(data, c.Ops) == nil {
			nd = &Doc{ID: k.ID, Version: c.Version, Data: data}
		}
	case old != nil && !old.Deleted && c.Version == old.Version+1:
		data := clone(old.Data)
		if merge.ApplyPlain(data, c.Ops) == nil {
			nd = &Doc{ID: k.ID, Version: c.Version, Data: data}
		}
	}
	if nd == nil || old == nil && !c.Created || old != nil && c.Version != old.Version+1 {
		// A gap or a summary without ops: read the document.
		delta = nil
		if nd == nil || !nd.Deleted {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			st, err := src.Load(ctx, k)
			cancel()
			if err != nil || st.Doc == nil {
				return // the next change or query load repairs it
			}
			nd = fromStore(k.ID, st.Doc)
			if old != nil && nd.Version <= old.Version {
				return
			}
		}
	}
	cl.docs[k.ID] = nd
	for path, byKey := range cl.eq {
		if key, ok := keyAt(old, path); ok {
			delete(byKey[key], k.ID)
		}
		if key, ok := keyAt(nd, path); ok {
			addTo(byKey, key, k.ID)
		}
	}
	notify := func(s *Sub) {
		if evs := s.update(cl, nd, delta); len(evs) > 0 {
			s.sink(s, evs)
		}
	}
	for path, byKey := range cl.keyed {
		ko, okOld := keyAt(old, path)
		kn, okNew := keyAt(nd, path)
		if okOld {
			for s := range byKey[ko] {
				notify(s)
			}
		}
		if okNew && (!okOld || kn != ko) {
			for s := range byKey[kn] {
				notify(s)
			}
		}
	}
	for s := range cl.unkeyed {
		notify(s)
	}
}

// keyAt is the value key of d's field at path (none for a missing or
// deleted document, or a value that is not a scalar).
func keyAt(d *Doc, path string) (string, bool) {
	if d == nil || d.Deleted {
		return "", false
	}
	v, ok := merge.Lookup(d.Data, path)
	if !ok {
		return "", false
	}
	return query.ValueKey(v)
}

func addTo[T comparable](m map[string]map[T]struct{}, key string, v T) {
	set := m[key]
	if set == nil {
		set = map[T]struct{}{}
		m[key] = set
	}
	set[v] = struct{}{}
}

// Sub is one live query.
type Sub struct {
	cl    *coll
	q     query.Query
	admit Admit
	sink  Sink

	// Guarded by cl.mu.
	win []*Doc // the result, in the query's order
	in  map[string]*Doc
}

// Query is the query the subscription runs.
func (s *Sub) Query() query.Query { return s.q }

// Subscribe starts a live query on collection name (loading its index on
// first use) and returns its current result in order. From then on every
// change to the result reaches sink.
func (e *Engine) Subscribe(ctx context.Context, name string, q query.Query, admit Admit, sink Sink) (*Sub, []*Doc, error) {
	cl, err := e.collection(ctx, name)
	if err != nil {
		return nil, nil, err
	}
	s := &Sub{cl: cl, q: q, admit: admit, sink: sink, in: map[string]*Doc{}}
	cl.mu.Lock()
	defer cl.mu.Unlock()
	s.win, _ = cl.run(q, admit)
	for _, d := range s.win {
		s.in[d.ID] = d
	}
	cl.subs[s] = struct{}{}
	if path, key, ok := q.EqualityKey(); ok {
		if cl.keyed[path] == nil {
			cl.keyed[path] = map[string]map[*Sub]struct{}{}
		}
		addTo(cl.keyed[path], key, s)
	} else {
		cl.unkeyed[s] = struct{}{}
	}
	return s, slices.Clone(s.win), nil
}

// Close ends the live query; its sink is not called after Close returns.
func (s *Sub) Close() {
	s.cl.mu.Lock()
	defer s.cl.mu.Unlock()
	delete(s.cl.subs, s)
	delete(s.cl.unkeyed, s)
	if path, key, ok := s.q.EqualityKey(); ok {
		if byKey := s.cl.keyed[path]; byKey != nil {
			delete(byKey[key], s)
			if len(byKey[key]) == 0 {
				delete(byKey, key)
			}
		}
	}
}

// Query runs q once over the index of collection name, as admit lets the
// caller see it: the results in order, at most q.Limit of them, and
// whether more follow.
func (e *Engine) Query(ctx context.Context, name string, q query.Query, admit Admit) ([]*Doc, bool, error) {
	cl, err := e.collection(ctx, name)
	if err != nil {
		return nil, false, err
	}
	cl.mu.Lock()
	defer cl.mu.Unlock()
	out, more := cl.run(q, admit)
	return out, more, nil
}

// run evaluates q over the index. Held: cl.mu.
func (cl *coll) run(q query.Query, admit Admit) ([]*Doc, bool) {
	var out []*Doc
	cmp := func(a, b *Doc) int { return q.Compare(a.item(), b.item()) }
	for d := range cl.candidates(q) {
		if !matches(q, admit, d) {
			continue
		}
		if q.Limit > 0 && len(out) >= q.Limit*4 {
			// Keep the candidates few: sort, cut to the limit plus one
			// (to tell whether more follow), and go on.
			slices.SortFunc(out, cmp)
			out = out[:q.Limit+1]
		}
		out = append(out, d)
	}
	slices.SortFunc(out, cmp)
	if q.Limit > 0 && len(out) > q.Limit {
		return out[:q.Limit], true
	}
	return out, false
}

// candidates yields the documents that may match q: those holding the
// value of its equality condition (indexing that path on first use), or
// every document.
func (cl *coll) candidates(q query.Query) func(yield func(*Doc) bool) {
	return func(yield func(*Doc) bool) {
		path, key, ok := q.EqualityKey()
		if !ok {
			for _, d := range cl.docs {
				if !yield(d) {
					return
				}
			}
			return
		}
		byKey := cl.eq[path]
		if byKey == nil {
			byKey = map[string]map[string]struct{}{}
			for id, d := range cl.docs {
				if k, ok := keyAt(d, path); ok {
					addTo(byKey, k, id)
				}
			}
			cl.eq[path] = byKey
		}
		for id := range byKey[key] {
			if !yield(cl.docs[id]) {
				return
			}
		}
	}
}

func matches(q query.Query, admit Admit, d *Doc) bool {
	return d != nil && !d.Deleted && q.Admits(d.item()) && (admit == nil || admit(d.Data))
}

// why names the reason d (now) is not a result of s. The read rules are
// asked before the query: whether a document the reader may no longer read
// (or whose queried fields it may no longer read) still matches is not the
// reader's to know.
func (s *Sub) why(d *Doc) string {
	switch {
	case d.Deleted:
		return WhyDeleted
	case s.admit != nil && !s.admit(d.Data):
		return WhyHidden
	case !s.q.Admits(d.item()):
		return WhyNoMatch
	}
	return WhyHidden
}

// update moves the window for document nd (its new version; delta is the
// change that made it from the indexed version before, or nil) and
// returns what changed in the result. Held: cl.mu.
//
// The window keeps one invariant: with fewer than Limit entries (or no
// limit) it holds every matching document; with Limit entries, every
// matching document outside it sorts after its last one. Only a document
// leaving a full window (or moving past its end) needs a scan of the index
// for the one that comes next.
func (s *Sub) update(cl *coll, nd *Doc, delta *core.Change) []Event {
	prev, wasIn := s.in[nd.ID]
	now := matches(s.q, s.admit, nd)
	if !wasIn && !now {
		return nil
	}
	limit := s.q.Limit
	full := limit > 0 && len(s.win) == limit
	var oldLast *Doc
	if full {
		oldLast = s.win[len(s.win)-1]
	}
	cmp := func(a, b *Doc) int { return s.q.Compare(a.item(), b.item()) }
	var evs []Event
	if wasIn {
		i := slices.Index(s.win, prev)
		s.win = slices.Delete(s.win, i, i+1)
		delete(s.in, nd.ID)
	}
	var popped, filled *Doc
	switch {
	case now && (!full || !wasIn && cmp(nd, oldLast) < 0 || wasIn && cmp(nd, oldLast) <= 0):
		s.insert(nd)
		if limit > 0 && len(s.win) > limit {
			popped = s.win[len(s.win)-1]
			s.win = s.win[:limit]
			delete(s.in, popped.ID)
		}
	case full && wasIn:
		// A document left a full window (or moved past its end): the next
		// matching document, which may be nd itself, comes in.
		var next *Doc
		for d := range cl.candidates(s.q) {
			if _, in := s.in[d.ID]; !in && matches(s.q, s.admit, d) && (next == nil || cmp(d, next) < 0) {
				next = d
			}
		}
		if next != nil {
			s.insert(next)
			if next != nd {
				filled = next
			}
		}
	}
	_, nowIn := s.in[nd.ID]
	switch {
	case wasIn && !nowIn:
		why := s.why(nd)
		if now {
			why = WhyLimit
		}
		evs = append(evs, Event{Kind: Removed, Doc: nd, Why: why})
	case !wasIn && nowIn:
		evs = append(evs, Event{Kind: Added, Doc: nd})
	case wasIn && nowIn:
		evs = append(evs, Event{Kind: Changed, Doc: nd, Delta: delta})
	}
	if popped != nil && popped != nd {
		evs = append(evs, Event{Kind: Removed, Doc: popped, Why: WhyLimit})
	}
	if filled != nil {
		evs = append(evs, Event{Kind: Added, Doc: filled})
	}
	return evs
}

// insert puts d into the window at its place in the order.
func (s *Sub) insert(d *Doc) {
	i, _ := slices.BinarySearchFunc(s.win, d, func(a, b *Doc) int { return s.q.Compare(a.item(), b.item()) })
	s.win = slices.Insert(s.win, i, d)
	s.in[d.ID] = d
}

// Visible admits the documents that view (a reader's view of a document
// under the collection's read rules) does not deny, and whose every field
// the query reads it shows: a condition or order key on a field the reader
// may not read never admits the document, so the result leaks nothing
// about the field. A nil view admits everything.
func Visible(q query.Query, view func(data map[string]any) collections.View) Admit {
	if view == nil {
		return nil
	}
	paths := q.Paths()
	return func(data map[string]any) bool {
		v := view(data)
		if v.Denied {
			return false
		}
		for _, p := range paths {
			if v.Hides(p) {
				return false
			}
		}
		return true
	}
}
