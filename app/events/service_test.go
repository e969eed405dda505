package events_test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/open-autoglm/autoglm/app/events"
	"github.com/open-autoglm/autoglm/app/internal/rest"
	"github.com/open-autoglm/autoglm/app/internal/servicetest"
	"github.com/open-autoglm/autoglm/app/internal/testutil"
)

// Two replicas in process, one cluster: every version of a document with
// `events: true` written through either replica is published on the events
// topic, in order, as CloudEvents whose ranges join up; a collection
// without events publishes none.
func TestEventsInProcess(t *testing.T) {
	const yaml = "collections:\n  orders:\n    events: true\n  notes: {}\n"
	a := servicetest.Start(t, servicetest.Options{Collections: yaml})
	b := servicetest.Start(t, servicetest.Options{Collections: yaml, Store: a.Store, Broker: a.Broker, State: a.State})
	const n = 12
	for i := 1; i <= n; i++ {
		r := a
		if i%2 == 0 {
			r = b
		}
		for _, doc := range []string{"orders/o1", "notes/x"} {
			body := fmt.Sprintf(`{"ops":[{"op":"set","path":"n","value":%d}]}`, i)
			if res := rest.Must(t, "PATCH", r.URL()+"/v1/docs/"+doc, body); res.Status/100 != 2 {
				t.Fatalf("patch %s: %d %s", doc, res.Status, res.Raw)
			}
		}
	}
	published := func() []events.CloudEvent {
		var out []events.CloudEvent
		for _, m := range a.State.Messages() {
			if m.Pubsub != a.Cfg.EventsPubsub || m.Topic != a.Cfg.EventsTopic {
				continue
			}
			var ce events.CloudEvent
			if err := json.Unmarshal(m.Body, &ce); err != nil {
				t.Fatal(err)
			}
			out = append(out, ce)
		}
		return out
	}
	covered := func(ces []events.CloudEvent) int64 {
		var top int64
		for _, ce := range ces {
			top = max(top, ce.Data.Version)
		}
		return top
	}
	testutil.Eventually(t, 20*time.Second, "events up to the last version", func() bool { return covered(published()) == n })
	seen := map[int64]bool{}
	for _, ce := range published() {
		if ce.Subject != "orders/o1" || ce.Data.Collection != "orders" {
			t.Fatalf("event for %s (%s): only orders has events", ce.Subject, ce.Data.Collection)
		}
		for i, c := range ce.Data.Changes {
			if c.Version != ce.Data.Prev+int64(i)+1 {
				t.Fatalf("event %s..%d: change %d is version %d", ce.ID, ce.Data.Version, i, c.Version)
			}
			seen[c.Version] = true
		}
	}
	for v := int64(1); v <= n; v++ {
		if !seen[v] {
			t.Fatalf("version %d was never published", v)
		}
	}
	t.Logf("%d events for %d versions", len(published()), n)
}
