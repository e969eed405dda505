// Package hub fans committed changes and presence out to the sessions of
// this replica that watch each document. Delivery never blocks the caller: a
// subscriber whose queue is full is told it lost messages and repairs from
// the op log. The hub also keeps the presence table of the documents watched
// here, merged from local sessions and other replicas, with expiry.
//
// Change observers (Observe, each named) see every change published to this
// hub, watched or not, before the sessions do: commits of this replica,
// broadcasts of other replicas' commits and anti-entropy repairs. A change
// may therefore reach them more than once (a broadcast can be redelivered,
// a repair repeats what a lost broadcast carried) and, after a lost
// broadcast, late; they must not block and must tolerate repeats. Consumers
// that must see each commit exactly once in the cluster observe the engine
// instead (package engine).
package hub

import (
	"context"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/open-autoglm/autoglm/app/core"
)

// Subscriber receives changes and presence. Offers must not block; they
// return false when the subscriber could not take the item.
type Subscriber interface {
	Offer(c core.Change) bool
	OfferPresence(p core.Presence) bool
}

// Options configure a Hub.
type Options struct {
	Node string
	// PresenceTTL is how long a presence entry lives without a refresh.
	PresenceTTL time.Duration
	// PublishPresence sends local presence to the other replicas; nil keeps
	// presence local.
	PublishPresence func([]core.Presence)
	// OnDrop is called for each change a subscriber could not take.
	OnDrop func()
	Now    func() time.Time
	// Tracer, when set, records the delivery of each change to the
	// sessions here as one span (see Deliver).
	Tracer trace.Tracer
}

type presenceKey struct {
	client, session string
}

// Hub maps documents to subscribers and presence.
type Hub struct {
	opt Options

	mu   sync.RWMutex
	subs map[string]map[Subscriber]struct{}
	// lists holds each document's subscribers as a slice that is replaced,
	// never changed, so Deliver can offer outside the lock.
	lists    map[string][]Subscriber
	presence map[string]map[presenceKey]core.Presence
	// observers see every change published here (Observe).
	observers []observer
	// seen is the newest version published per watched document and when,
	// for anti-entropy.
	seen map[string]seenVersion
}

type seenVersion struct {
	v  int64
	at time.Time
}

// New returns an empty Hub.
func New(opt Options) *Hub {
	if opt.PresenceTTL <= 0 {
		opt.PresenceTTL = 45 * time.Second
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	return &Hub{opt: opt, subs: map[string]map[Subscriber]struct{}{}, lists: map[string][]Subscriber{}, presence: map[string]map[presenceKey]core.Presence{},
		seen: map[string]seenVersion{}}
}

// Subscribe registers s for doc ("collection/id").
func (h *Hub) Subscribe(doc string, s Subscriber) {
	h.mu.Lock()
	defer h.mu.Unlock()
	m, ok := h.subs[doc]
	if !ok {
		m = map[Subscriber]struct{}{}
		h.subs[doc] = m
	}
	m[s] = struct{}{}
	h.lists[doc] = listOf(m)
}

func listOf(m map[Subscriber]struct{}) []Subscriber {
	l := make([]Subscriber, 0, len(m))
	for s := range m {
		l = append(l, s)
	}
	return l
}

// Unsubscribe removes s from doc.
func (h *Hub) Unsubscribe(doc string, s Subscriber) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if m, ok := h.subs[doc]; ok {
		delete(m, s)
		h.lists[doc] = listOf(m)
		if len(m) == 0 {
			delete(h.subs, doc)
			delete(h.lists, doc)
			delete(h.presence, doc)
			delete(h.seen, doc)
		}
	}
}

type observer struct {
	name string
	f    func([]core.Change)
}

// Observe registers f, under a name, to see every change published here
// (local commits, broadcasts from other replicas, anti-entropy repairs),
// whether or not a session watches its document, before the subscribers
// do. f must not block.
func (h *Hub) Observe(name string, f func([]core.Change)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.observers = append(h.observers, observer{name, f})
}

// Publish offers each change to the subscribers of its document.
func (h *Hub) Publish(changes []core.Change) {
	h.Deliver(context.Background(), changes)
}

// Deliver is Publish for changes committed or received in the span of
// ctx. With a Tracer, each change that has subscribers here gets one child
// span of ctx (not one per session), ended when every session it was
// offered to has handled it, with the number of sessions and the slowest
// one's wait (fanout.go).
//
// The offers are made outside the hub's lock (an offer may write to an
// idle connection), to the subscribers registered when Deliver began: one
// registering later reads the store after these changes were committed,
// and one that left ignores what it no longer watches.
func (h *Hub) Deliver(ctx context.Context, changes []core.Change) {
	var buf [8][]Subscriber
	lists := buf[:0]
	h.mu.Lock()
	for _, o := range h.observers {
		o.f(changes)
	}
	now := h.opt.Now()
	for _, c := range changes {
		if _, watched := h.subs[c.Doc]; watched && c.Version >= h.seen[c.Doc].v {
			h.seen[c.Doc] = seenVersion{v: c.Version, at: now}
		}
		lists = append(lists, h.lists[c.Doc])
	}
	h.mu.Unlock()
	for i, c := range changes {
		subs := lists[i]
		var f *fanout
		if h.opt.Tracer != nil && len(subs) > 0 {
			f = startFanout(ctx, h.opt.Tracer, c, len(subs))
			c.Fanout = f
		}
		for _, s := range subs {
			if !s.Offer(c) {
				if f != nil {
					f.drop()
				}
				if h.opt.OnDrop != nil {
					h.opt.OnDrop()
				}
			}
		}
	}
}

// Quiet lists the watched documents that have not published a change for
// at least d, with the newest version this hub has seen for each (0: none
// since it started watching).
func (h *Hub) Quiet(d time.Duration) map[string]int64 {
	h.mu.RLock()
	defer h.mu.RUnlock()
	cutoff := h.opt.Now().Add(-d)
	out := map[string]int64{}
	for doc := range h.subs {
		if s := h.seen[doc]; s.at.Before(cutoff) {
			out[doc] = s.v
		}
	}
	return out
}

// Checked records that doc was compared with the store at version v, so it
// counts as quiet again only after another interval.
func (h *Hub) Checked(doc string, v int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, watched := h.subs[doc]; watched && v >= h.seen[doc].v {
		h.seen[doc] = seenVersion{v: v, at: h.opt.Now()}
	}
}

// SetPresence records presence set by a local session (from) and relays it
// to the document's other local watchers and to the other replicas. A Gone
// entry removes it.
func (h *Hub) SetPresence(from Subscriber, p core.Presence) {
	p.Node = h.opt.Node
	p.Expires = h.opt.Now().Add(h.opt.PresenceTTL).UnixMilli()
	if h.apply(from, p) && h.opt.PublishPresence != nil {
		h.opt.PublishPresence([]core.Presence{p})
	}
}

// RemotePresence applies presence broadcast by other replicas.
func (h *Hub) RemotePresence(ps []core.Presence) {
	for _, p := range ps {
		if p.Node == h.opt.Node {
			continue
		}
		h.apply(nil, p)
	}
}

// apply stores p and fans it out; it reports whether anything changed for
// the other watchers (a refresh with the same data is stored silently but
// still forwarded to other replicas so their expiry moves on).
func (h *Hub) apply(from Subscriber, p core.Presence) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	subs, watched := h.subs[p.Doc]
	if !watched && from == nil {
		return false // nobody here watches this document
	}
	k := presenceKey{p.Client, p.Session}
	table := h.presence[p.Doc]
	if p.Gone {
		if _, ok := table[k]; !ok {
			return from != nil
		}
		delete(table, k)
	} else {
		if table == nil {
			table = map[presenceKey]core.Presence{}
			h.presence[p.Doc] = table
		}
		table[k] = p
	}
	for s := range subs {
		if s != from {
			s.OfferPresence(p)
		}
	}
	return true
}

// PresenceOf returns the live presence entries of doc.
func (h *Hub) PresenceOf(doc string) []core.Presence {
	h.mu.RLock()
	defer h.mu.RUnlock()
	out := make([]core.Presence, 0, len(h.presence[doc]))
	for _, p := range h.presence[doc] {
		out = append(out, p)
	}
	return out
}

// Sweep removes presence entries that were not refreshed in time (their
// client or replica died) and tells the watchers they are gone.
func (h *Hub) Sweep() {
	now := h.opt.Now().UnixMilli()
	h.mu.Lock()
	defer h.mu.Unlock()
	for doc, table := range h.presence {
		for k, p := range table {
			if p.Expires > now {
				continue
			}
			delete(table, k)
			gone := core.Presence{Doc: doc, Client: p.Client, Session: p.Session, Node: p.Node, Gone: true}
			for s := range h.subs[doc] {
				s.OfferPresence(gone)
			}
		}
	}
}

// Watched returns how many documents have subscribers, and how many
// subscriptions there are in all.
func (h *Hub) Watched() (docs, subs int) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	for _, m := range h.subs {
		subs += len(m)
	}
	return len(h.subs), subs
}
