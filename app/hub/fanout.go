package hub

import (
	"context"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/open-autoglm/autoglm/app/core"
)

// fanout is the delivery span of one change on this replica. Every session
// the change was offered to reports once (Done after handling it, or drop
// when its queue was full); the last report ends the span.
type fanout struct {
	span    trace.Span
	start   time.Time
	pending atomic.Int64
	dropped atomic.Int64
	slowest atomic.Int64 // ns from the offer until a session had handled the change
}

var _ core.Fanout = (*fanout)(nil)

func startFanout(ctx context.Context, t trace.Tracer, c core.Change, sessions int) *fanout {
	_, span := t.Start(ctx, "deliver", trace.WithAttributes(
		attribute.String("autoglm.doc", c.Doc),
		attribute.Int64("autoglm.version", c.Version),
		attribute.Int("autoglm.sessions", sessions)))
	f := &fanout{span: span, start: time.Now()}
	f.pending.Store(int64(sessions))
	return f
}

// Done records that a session has handled the change (written it, or
// found it already delivered).
func (f *fanout) Done() {
	wait := int64(time.Since(f.start))
	for {
		cur := f.slowest.Load()
		if wait <= cur || f.slowest.CompareAndSwap(cur, wait) {
			break
		}
	}
	f.report()
}

// drop records a session whose queue could not take the change.
func (f *fanout) drop() {
	f.dropped.Add(1)
	f.report()
}

func (f *fanout) report() {
	if f.pending.Add(-1) != 0 {
		return
	}
	f.span.SetAttributes(
		attribute.Int64("autoglm.dropped", f.dropped.Load()),
		attribute.Float64("autoglm.queue_wait_max_ms", float64(f.slowest.Load())/1e6))
	f.span.End()
}
