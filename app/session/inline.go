package session

import (
	"github.com/open-autoglm/autoglm/app/collections"
	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/protocol"
)

// QueueSender is a SharedSender that can also take a shared message without
// blocking. With one, the hub's fan-out delivers a live change to an idle
// session itself (Offer), instead of waking the session's goroutine for each
// delivery.
type QueueSender interface {
	SharedSender
	// QueueShared takes m without blocking and reports whether it did: m
	// is written, or buffered to be written before anything sent after it.
	// It returns false and takes nothing when it cannot (too much is
	// buffered already, or the connection has failed).
	QueueShared(m *protocol.Shared) bool
	// Pending is ready when QueueShared left bytes the connection could not
	// take at once; the session then calls Flush.
	Pending() <-chan struct{}
	// Flush writes what is buffered, blocking as Send does (up to the
	// transport's write timeout).
	Flush() error
}

// offerInline delivers c on the caller's goroutine when it is the plain
// case: the next version of a delta subscription, not this session's own
// op (that one is its ack, in order with its result), not a change the
// read rules look at or on a document whose view is unknown (that may need
// the stored document), and not after the session's token expired (Run
// then closes the session). It reports whether c was handled; false leaves
// the session as it was, and c goes through the queue. Called with s.mu
// held.
func (s *Session) offerInline(c *core.Change) bool {
	st, ok := s.docs[c.Doc]
	if !ok || c.Version <= st.last {
		// Not watched (any more), or already delivered: nothing to do, as
		// change would find.
		s.inlineTaken(c)
		return true
	}
	if st.full || c.Pull || c.Version != st.last+1 || (c.Author == s.client && c.OpID != 0) ||
		s.opt.Policy.Touches(st.key.Collection, *c) || st.view.Key() == collections.UnknownView.Key() || s.expired() {
		return false
	}
	if !st.view.Denied && !s.queueDelta(views.delta(s.backend, *c, st.view)) {
		return false
	}
	st.last = c.Version
	if s.opt.Delivered != nil {
		s.opt.Delivered(*c)
	}
	s.inlineTaken(c)
	return true
}

// inlineTaken reports a change handled without the queue to the same hooks
// as one taken from it.
func (s *Session) inlineTaken(c *core.Change) {
	if s.opt.QueueDepth != nil {
		s.opt.QueueDepth(0)
	}
	handled(c)
}

// queueDelta hands m to the transport without blocking, in the connection's
// wire forms as Send would. When the transport refuses it, an author number
// the connection would have heard of with m counts as unheard again, so the
// delta that goes through the queue instead still defines it.
func (s *Session) queueDelta(m *protocol.Shared) bool {
	h, a, define, compact := s.wire.forms(m.Msg)
	if compact {
		m = m.CompactFor(h, a, define, s.wire.node)
	}
	if s.inline.QueueShared(m) {
		return true
	}
	if define {
		s.wire.forget(a)
	}
	return false
}

// forget makes author number a unheard on this connection again.
func (w *wire) forget(a uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.known, a)
}
