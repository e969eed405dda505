package telemetry

import (
	"context"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/open-autoglm/autoglm/app/protocol"
	"github.com/open-autoglm/autoglm/app/session"
)

// Ops returns the op observer of one sync session (WebSocket, SSE or
// long-poll): with tracing, each op is a span from its receipt to its ack
// or reject, a child of the client's span (the op's trace field, else the
// HTTP request that carried it); answered, when set, gets each op's
// latency. Nil when there is nothing to observe.
func (t *Telemetry) Ops(sessionID string, answered func(result string, d time.Duration)) session.OpObserver {
	tracer := t.Tracer()
	if tracer == nil && answered == nil {
		return nil
	}
	return &ops{tracer: tracer, session: sessionID, answered: answered, open: map[opKey]*openOp{}}
}

type opKey struct {
	doc string
	op  uint64
}

type openOp struct {
	start time.Time
	ctx   context.Context // carries span
	span  trace.Span
}

type ops struct {
	tracer   trace.Tracer
	session  string
	answered func(string, time.Duration)

	mu   sync.Mutex
	open map[opKey]*openOp
}

func (o *ops) Received(ctx context.Context, m protocol.Message) {
	k := opKey{m.Doc, m.Op}
	o.mu.Lock()
	defer o.mu.Unlock()
	if _, resent := o.open[k]; resent {
		return // a resend of an op in flight: the first copy is answered
	}
	op := &openOp{start: time.Now(), ctx: context.Background()}
	if o.tracer != nil {
		parent := trace.ContextWithSpanContext(context.Background(), trace.SpanContextFromContext(ctx))
		if m.Trace != "" {
			parent = WithTraceparent(parent, m.Trace, "")
		}
		op.ctx, op.span = o.tracer.Start(parent, "op", trace.WithSpanKind(trace.SpanKindServer),
			trace.WithAttributes(
				attribute.String("autoglm.doc", m.Doc),
				attribute.Int64("autoglm.op_id", int64(m.Op)),
				attribute.String("autoglm.session", o.session)))
	}
	o.open[k] = op
}

func (o *ops) Context(doc string, op uint64) context.Context {
	o.mu.Lock()
	defer o.mu.Unlock()
	if p, ok := o.open[opKey{doc, op}]; ok {
		return p.ctx
	}
	return context.Background()
}

func (o *ops) Answered(m protocol.Message) {
	k := opKey{m.Doc, m.Op}
	o.mu.Lock()
	p, ok := o.open[k]
	delete(o.open, k)
	o.mu.Unlock()
	if !ok {
		return
	}
	result := "ack"
	if m.T == protocol.TReject {
		result = "reject"
	}
	if o.answered != nil {
		o.answered(result, time.Since(p.start))
	}
	if p.span == nil {
		return
	}
	if m.T == protocol.TReject {
		p.span.SetStatus(codes.Error, string(m.Code))
		p.span.SetAttributes(attribute.String("autoglm.code", string(m.Code)))
	} else {
		p.span.SetAttributes(attribute.Int64("autoglm.version", m.V), attribute.Bool("autoglm.dup", m.Dup))
	}
	p.span.End()
}

func (o *ops) Close() {
	o.mu.Lock()
	defer o.mu.Unlock()
	for k, p := range o.open {
		if p.span != nil {
			p.span.SetStatus(codes.Error, "session ended before the op was answered")
			p.span.End()
		}
		delete(o.open, k)
	}
}
