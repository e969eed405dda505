package telemetry_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/open-autoglm/autoglm/app/engine"
	"github.com/open-autoglm/autoglm/app/hub"
	"github.com/open-autoglm/autoglm/app/internal/stacktest"
	"github.com/open-autoglm/autoglm/app/internal/testutil"
	"github.com/open-autoglm/autoglm/app/merge"
	"github.com/open-autoglm/autoglm/app/protocol"
	"github.com/open-autoglm/autoglm/app/session"
	"github.com/open-autoglm/autoglm/app/telemetry"
)

// Without an OTLP endpoint tracing is off: no tracer, no instrumentation.
func TestOffWithoutEndpoint(t *testing.T) {
	for name, env := range map[string]map[string]string{
		"Unset":    {},
		"Disabled": {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317", "OTEL_SDK_DISABLED": "true"},
		"None":     {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317", "OTEL_TRACES_EXPORTER": "none"},
	} {
		t.Run(name, func(t *testing.T) {
			tel, err := telemetry.New(context.Background(), telemetry.Options{Getenv: func(k string) string { return env[k] }})
			if err != nil {
				t.Fatal(err)
			}
			if tel.Enabled() || tel.Tracer() != nil || tel.DialOptions() != nil || tel.Ops("s", nil) != nil {
				t.Fatal("tracing is on without an endpoint")
			}
		})
	}
	t.Run("ErrBadProtocol", func(t *testing.T) {
		env := map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "thrift"}
		if _, err := telemetry.New(context.Background(), telemetry.Options{Getenv: func(k string) string { return env[k] }}); err == nil {
			t.Fatal("want an error for an unknown protocol")
		}
	})
}

type chanSender chan protocol.Message

func (c chanSender) Send(ctx context.Context, m protocol.Message) error {
	select {
	case c <- m:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// sharedSender also takes messages encoded once for many connections.
type sharedSender struct {
	chanSender
	shared *atomic.Int64
}

func (s sharedSender) SendShared(ctx context.Context, m *protocol.Shared) error {
	s.shared.Add(1)
	return s.Send(ctx, m.Msg)
}

func next(t *testing.T, c chanSender, typ string) protocol.Message {
	t.Helper()
	for {
		select {
		case m := <-c:
			if m.T == typ {
				return m
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no %s", typ)
		}
	}
}

// An op carrying a trace field is a span from receipt to ack, a child of
// the client's span; its commit is a child of the op, and the delivery to
// the document's other session a child of the commit, ended once that
// session has written it, with the number of sessions.
func TestOpSpanFromReceiptToAck(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tel := telemetry.WithProvider(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec)))
	st := stacktest.New(stacktest.Options{Hub: hub.Options{Tracer: tel.Tracer()}, Engine: engine.Options{Tracer: tel.Tracer()}})
	h, eng := st.Hub, st.Eng
	var mu sync.Mutex
	var answered []string
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var shared atomic.Int64
	start := func(id string) chanSender {
		out := make(chanSender, 100)
		s := session.New(session.Options{ID: id, Ops: tel.Ops(id, func(result string, d time.Duration) {
			mu.Lock()
			answered = append(answered, result)
			mu.Unlock()
		})}, eng, h, sharedSender{out, &shared})
		go s.Run(ctx)
		for _, m := range []protocol.Message{{T: protocol.THello, Client: id}, {T: protocol.TSub, Doc: "forms/f1"}} {
			if !s.Receive(ctx, m) {
				t.Fatal("session ended")
			}
		}
		next(t, out, protocol.TSynced)
		if id == "author" {
			const caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
			op := protocol.Message{T: protocol.TOp, Doc: "forms/f1", Op: 1, Trace: caller,
				Ops: []merge.FieldOp{{Op: merge.KindSet, Path: "a", Value: []byte(`1`)}}}
			if !s.Receive(ctx, op) {
				t.Fatal("session ended")
			}
		}
		return out
	}
	watcher := start("watcher")
	author := start("author")
	if ack := next(t, author, protocol.TAck); ack.V != 1 {
		t.Fatalf("ack %+v", ack)
	}
	next(t, watcher, protocol.TDelta)
	if shared.Load() != 1 {
		t.Errorf("%d deltas sent through the shared encoding, want 1: observing ops must not hide it", shared.Load())
	}

	var op, commit, deliver sdktrace.ReadOnlySpan
	testutil.Within(5*time.Second, func() bool {
		for _, s := range rec.Ended() {
			switch s.Name() {
			case "op":
				op = s
			case "commit forms":
				commit = s
			case "deliver":
				deliver = s
			}
		}
		return op != nil && commit != nil && deliver != nil
	})
	if op == nil || commit == nil || deliver == nil {
		t.Fatalf("spans op %v, commit %v, deliver %v", op != nil, commit != nil, deliver != nil)
	}
	if op.Parent().SpanID().String() != "00f067aa0ba902b7" || op.SpanContext().TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Errorf("op span's parent %v, want the client's span", op.Parent())
	}
	if op.SpanKind() != trace.SpanKindServer || attr(op, "autoglm.version") != "1" {
		t.Errorf("op span kind %v, attributes %v", op.SpanKind(), op.Attributes())
	}
	if commit.Parent().SpanID() != op.SpanContext().SpanID() {
		t.Errorf("commit's parent %v, want the op span", commit.Parent().SpanID())
	}
	if deliver.Parent().SpanID() != commit.SpanContext().SpanID() {
		t.Errorf("delivery's parent %v, want the commit span", deliver.Parent().SpanID())
	}
	// Both sessions watch the document: the author's copy is its ack.
	if attr(deliver, "autoglm.sessions") != "2" || attr(deliver, "autoglm.dropped") != "0" {
		t.Errorf("delivery attributes %v", deliver.Attributes())
	}
	mu.Lock()
	defer mu.Unlock()
	if len(answered) != 1 || answered[0] != "ack" {
		t.Errorf("op latencies recorded %v, want one ack", answered)
	}
}

func attr(s sdktrace.ReadOnlySpan, k string) string {
	for _, a := range s.Attributes() {
		if string(a.Key) == k {
			return a.Value.String()
		}
	}
	return ""
}
