package daprconn

import (
	"testing"

	dapr "github.com/dapr/go-sdk/client"
)

func TestComponentByName(t *testing.T) {
	md := &dapr.GetMetadataResponse{RegisteredComponents: []*dapr.MetadataRegisteredComponents{
		{Name: "statestore", Type: "state.sqlite", Version: "v1"},
		{Name: "broadcast", Type: "pubsub.redis", Version: "v1"},
	}}
	if c := Component(md, "broadcast"); c == nil || c.Type != "pubsub.redis" {
		t.Fatalf("broadcast: %+v, want the pubsub.redis component", c)
	}
	if c := Component(md, "lock"); c != nil {
		t.Fatalf("lock: %+v, want none", c)
	}
	if c := Component(nil, "statestore"); c != nil {
		t.Fatalf("no metadata: %+v, want none", c)
	}
}
