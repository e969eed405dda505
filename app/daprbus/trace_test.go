package daprbus_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"

	pb "github.com/dapr/dapr/pkg/proto/runtime/v1"
	dapr "github.com/dapr/go-sdk/client"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/daprbus"
)

type capture struct {
	req *pb.PublishEventRequest
}

func (c *capture) PublishEvent(ctx context.Context, pubsub, topic string, data interface{}, opts ...dapr.PublishEventOption) error {
	c.req = &pb.PublishEventRequest{PubsubName: pubsub, Topic: topic}
	for _, o := range opts {
		o(c.req)
	}
	return nil
}

// A commit made in a trace publishes its broadcast with the commit span as
// the CloudEvent's traceparent; an untraced one sets none.
func TestPublishCarriesTraceparent(t *testing.T) {
	tp := sdktrace.NewTracerProvider()
	ctx, span := tp.Tracer("test").Start(context.Background(), "commit")
	defer span.End()
	sc := span.SpanContext()
	want := fmt.Sprintf("00-%s-%s-01", sc.TraceID(), sc.SpanID())
	c := &capture{}
	bus := daprbus.New(c, "broadcast", "changes", "n1")
	changes := []core.Change{{Doc: "a/b", Version: 1}}
	if err := bus.Publish(ctx, changes); err != nil {
		t.Fatal(err)
	}
	if got := c.req.GetMetadata()["cloudevent.traceparent"]; got != want {
		t.Errorf("cloudevent.traceparent = %q, want %q", got, want)
	}
	if err := bus.Publish(context.Background(), changes); err != nil {
		t.Fatal(err)
	}
	if _, ok := c.req.GetMetadata()["cloudevent.traceparent"]; ok {
		t.Error("untraced publish carries a traceparent")
	}
}

// The receipt of a broadcast is a span, child of the span the CloudEvent
// names, linked to daprd's delivery span, and the changes are delivered in
// it.
func TestReceiptIsChildOfCommit(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	var delivered trace.SpanContext
	h := &daprbus.Handler{Tracer: tp.Tracer("test"), Deliver: func(ctx context.Context, cs []core.Change) {
		delivered = trace.SpanContextFromContext(ctx)
	}}
	const commit = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	const daprd = "00-4bf92f3577b34da6a3ce929d0e0e4736-b7ad6b7169203331-01"
	body := `{"id":"e1","topic":"changes","pubsubname":"broadcast","traceparent":"` + commit + `",` +
		`"data":{"node":"n1","changes":[{"doc":"a/b","v":1,"pv":0}]}}`
	req := httptest.NewRequest("POST", "/dapr/events/changes", strings.NewReader(body))
	req.Header.Set("traceparent", daprd)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	if !strings.Contains(w.Body.String(), "SUCCESS") {
		t.Fatalf("answer %s", w.Body)
	}
	spans := rec.Ended()
	if len(spans) != 1 {
		t.Fatalf("%d spans, want 1", len(spans))
	}
	s := spans[0]
	if got := s.Parent().SpanID().String(); got != "00f067aa0ba902b7" || s.SpanContext().TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Errorf("receipt span parent %s in trace %s, want the commit's", got, s.SpanContext().TraceID())
	}
	if s.SpanKind() != trace.SpanKindConsumer || s.Name() != "receive changes" {
		t.Errorf("span %q kind %v", s.Name(), s.SpanKind())
	}
	if l := s.Links(); len(l) != 1 || l[0].SpanContext.SpanID().String() != "b7ad6b7169203331" {
		t.Errorf("links %v, want daprd's delivery span", l)
	}
	if !delivered.Equal(s.SpanContext()) {
		t.Errorf("changes delivered in %v, want the receipt span %v", delivered, s.SpanContext())
	}
}
