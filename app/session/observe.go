package session

import (
	"context"

	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/engine"
	"github.com/open-autoglm/autoglm/app/protocol"
)

// OpObserver follows each op of one session from its receipt to its ack
// or reject: op-to-ack latency and the op's span (app/telemetry). Received
// is called by the transport's reader, the others by the session.
type OpObserver interface {
	// Received sees an op as it arrives; ctx is the transport's (for the
	// HTTP-carried transports, the request's).
	Received(ctx context.Context, m protocol.Message)
	// Context is what the op is submitted with: it carries the op's span.
	Context(doc string, op uint64) context.Context
	// Answered sees the ack or reject of an op once it is written.
	Answered(m protocol.Message)
	// Close ends what is still open when the session ends.
	Close()
}

// contextSubmitter is a Backend that takes the op's trace with it.
type contextSubmitter interface {
	SubmitContext(ctx context.Context, k core.Key, op core.Op, done func(engine.Result))
}

// answering tells the observer about every ack and reject written.
type answering struct {
	Sender
	ops OpObserver
}

// answeringShared keeps the shared encodings of a SharedSender (deltas:
// nothing for the observer).
type answeringShared struct {
	answering
	shared SharedSender
}

func (a answeringShared) SendShared(ctx context.Context, m *protocol.Shared) error {
	return a.shared.SendShared(ctx, m)
}

// observed wraps send to tell ops about answers, keeping what it can do.
func observed(send Sender, ops OpObserver) Sender {
	a := answering{Sender: send, ops: ops}
	if ss, ok := send.(SharedSender); ok {
		return answeringShared{answering: a, shared: ss}
	}
	return a
}

func (a answering) Send(ctx context.Context, m protocol.Message) error {
	err := a.Sender.Send(ctx, m)
	if err == nil && (m.T == protocol.TAck || m.T == protocol.TReject) {
		a.ops.Answered(m)
	}
	return err
}

// submit hands an op to the backend, with its trace when observed.
func (s *Session) submit(k core.Key, op core.Op, done func(engine.Result)) {
	if b, ok := s.backend.(contextSubmitter); ok && s.opt.Ops != nil {
		b.SubmitContext(s.opt.Ops.Context(k.String(), op.OpID), k, op, done)
		return
	}
	s.backend.Submit(k, op, done)
}

// handled reports a live change taken from the queue to its delivery span.
func handled(c *core.Change) {
	if c.Fanout != nil {
		c.Fanout.Done()
	}
}

// drainEvents empties the live-change queue of a session that has stopped
// (it no longer gets offers): what was still queued counts as handled.
func (s *Session) drainEvents() {
	for {
		select {
		case c := <-s.events:
			handled(c)
		default:
			return
		}
	}
}
