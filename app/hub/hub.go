// Package hub fans committed changes out to the sessions of this replica that
// watch each document. Delivery never blocks the caller: a subscriber whose
// queue is full is told it lost messages and repairs from the op log.
package hub

import (
	"sync"

	"github.com/open-autoglm/autoglm/app/core"
)

// Subscriber receives changes. Offer must not block; it returns false when
// the subscriber could not take the change (its queue is full).
type Subscriber interface {
	Offer(c core.Change) bool
}

// Hub maps documents to subscribers.
type Hub struct {
	mu   sync.RWMutex
	subs map[string]map[Subscriber]struct{}
	// Dropped counts changes a full subscriber could not take.
	dropped func()
}

// New returns an empty Hub. onDrop, if set, is called for each change a
// subscriber could not take.
func New(onDrop func()) *Hub {
	return &Hub{subs: map[string]map[Subscriber]struct{}{}, dropped: onDrop}
}

// Subscribe registers s for changes of doc ("collection/id").
func (h *Hub) Subscribe(doc string, s Subscriber) {
	h.mu.Lock()
	defer h.mu.Unlock()
	m, ok := h.subs[doc]
	if !ok {
		m = map[Subscriber]struct{}{}
		h.subs[doc] = m
	}
	m[s] = struct{}{}
}

// Unsubscribe removes s from doc.
func (h *Hub) Unsubscribe(doc string, s Subscriber) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if m, ok := h.subs[doc]; ok {
		delete(m, s)
		if len(m) == 0 {
			delete(h.subs, doc)
		}
	}
}

// Publish offers each change to the subscribers of its document.
func (h *Hub) Publish(changes []core.Change) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	for _, c := range changes {
		for s := range h.subs[c.Doc] {
			if !s.Offer(c) && h.dropped != nil {
				h.dropped()
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
