package daprbus_test

import (
	"context"
	"testing"

	pb "github.com/dapr/dapr/pkg/proto/runtime/v1"
	dapr "github.com/dapr/go-sdk/client"
	"google.golang.org/grpc/metadata"

	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/daprbus"
	"github.com/open-autoglm/autoglm/app/metrics/tracectx"
)

type capture struct {
	req *pb.PublishEventRequest
	md  metadata.MD
}

func (c *capture) PublishEvent(ctx context.Context, pubsub, topic string, data interface{}, opts ...dapr.PublishEventOption) error {
	c.req = &pb.PublishEventRequest{PubsubName: pubsub, Topic: topic}
	for _, o := range opts {
		o(c.req)
	}
	c.md, _ = metadata.FromOutgoingContext(ctx)
	return nil
}

// A write made in a trace publishes its broadcast in that trace: as the
// CloudEvent's traceparent and as the gRPC header daprd reads.
func TestPublishCarriesTraceparent(t *testing.T) {
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	c := &capture{}
	bus := daprbus.New(c, "broadcast", "changes", "n1")
	changes := []core.Change{{Doc: "a/b", Version: 1}}
	if err := bus.Publish(tracectx.With(context.Background(), tp), changes); err != nil {
		t.Fatal(err)
	}
	if got := c.req.GetMetadata()["cloudevent.traceparent"]; got != tp {
		t.Errorf("cloudevent.traceparent = %q, want %q", got, tp)
	}
	if got := c.md.Get(tracectx.Header); len(got) != 1 || got[0] != tp {
		t.Errorf("gRPC traceparent = %v, want [%s]", got, tp)
	}
	if err := bus.Publish(context.Background(), changes); err != nil {
		t.Fatal(err)
	}
	if _, ok := c.req.GetMetadata()["cloudevent.traceparent"]; ok {
		t.Error("untraced publish carries a traceparent")
	}
}
