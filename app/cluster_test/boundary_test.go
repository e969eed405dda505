package cluster_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/open-autoglm/autoglm/app/client"
	"github.com/open-autoglm/autoglm/app/internal/clienttest"
	"github.com/open-autoglm/autoglm/app/internal/cluster"
)

// TestForgedBroadcastRefused: replicas run as processes the way
// `make run-cluster` runs them (tokens from the environment) refuse a
// change summary posted to their broadcast route without daprd's token;
// subscribers on every replica get the real next version, not the forged
// one.
func TestForgedBroadcastRefused(t *testing.T) {
	c := cluster.Start(t, cluster.Options{Profile: "redis", Replicas: 2})
	doc := collection() + "/forged"
	create(t, c.Nodes[0].URL(), []string{doc})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var subs []*client.Doc
	for _, n := range c.Nodes {
		subs = append(subs, clienttest.Watch(t, ctx, n.WSURL(), client.Options{}, doc, 1))
	}
	forged := fmt.Sprintf(`{"id":"forged","type":"com.dapr.event.sent","topic":%q,"data":{"node":"intruder",`+
		`"changes":[{"doc":%q,"v":2,"pv":1,"ops":[{"op":"set","path":"n","value":"forged"}],"hlc":"%d.0.intruder"}]}}`,
		c.Topic, doc, time.Now().UnixMilli())
	for _, n := range c.Nodes {
		for _, hdr := range [][]string{nil, {"dapr-api-token", n.DaprToken}} {
			if r := mustDo(t, "POST", n.URL()+"/dapr/events/changes", forged, hdr...); r.Status != 401 {
				t.Fatalf("replica %d: forged broadcast with %q: %d %s; want 401", n.Index, hdr, r.Status, r.Raw)
			}
		}
	}
	if r := mustDo(t, "PATCH", c.Nodes[1].URL()+"/v1/docs/"+doc, `{"ops":[{"op":"set","path":"n","value":"real"}]}`); r.Status != 200 {
		t.Fatalf("patch: %d %s", r.Status, r.Raw)
	}
	for i, d := range subs {
		if err := d.WaitVersion(ctx, 2); err != nil {
			t.Fatal(err)
		}
		if got := d.Data()["n"]; got != "real" {
			t.Fatalf("subscriber on replica %d holds n=%v at version 2; want the real change", i, got)
		}
	}
}
