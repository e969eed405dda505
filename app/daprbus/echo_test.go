package daprbus_test

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/daprbus"
	"github.com/open-autoglm/autoglm/app/internal/daprtest"
)

func deliver(t *testing.T, h *daprbus.Handler, data string) string {
	t.Helper()
	body := `{"id":"e1","topic":"changes","pubsubname":"broadcast","data":` + data + `}`
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("POST", "/dapr/events/changes", strings.NewReader(body)))
	return w.Body.String()
}

// A replica's own broadcast is answered SUCCESS and not delivered again
// (its commits and presence were delivered locally before the publish);
// every other replica's is delivered, including one whose node id merely
// starts with this one's.
func TestOwnEchoIsNotDelivered(t *testing.T) {
	var got []string
	h := &daprbus.Handler{Node: "n1",
		Deliver:         func(_ context.Context, cs []core.Change) { got = append(got, cs[0].Doc) },
		DeliverPresence: func(ps []core.Presence) { got = append(got, "presence "+ps[0].Doc) },
	}
	for _, tc := range []struct {
		data string
		want []string
	}{
		{`{"node":"n1","changes":[{"doc":"a/own","v":1,"pv":0}]}`, nil},
		{`"{\"node\":\"n1\",\"changes\":[{\"doc\":\"a/own\",\"v\":1,\"pv\":0}]}"`, nil}, // data as a JSON string
		{`{"changes":[{"doc":"a/own","v":1,"pv":0}],"node":"n1"}`, nil},                 // node not first
		{`{"node":"n1","presence":[{"doc":"a/own","client":"c"}]}`, nil},
		{`{"node":"n10","changes":[{"doc":"a/other","v":1,"pv":0}]}`, []string{"a/other"}},
		{`{"node":"n2","presence":[{"doc":"a/p","client":"c"}]}`, []string{"presence a/p"}},
	} {
		got = nil
		if ans := deliver(t, h, tc.data); !strings.Contains(ans, "SUCCESS") {
			t.Errorf("%s: answer %s", tc.data, ans)
		}
		if strings.Join(got, ",") != strings.Join(tc.want, ",") {
			t.Errorf("%s: delivered %q, want %q", tc.data, got, tc.want)
		}
	}
}

// The bus knows, from the sidecar, whether its broadcast component reaches
// any other replica: pubsub.in-memory (the local profile) does not, so
// nothing is published there; Redis streams do.
func TestLocalOnlyComponentIsDetected(t *testing.T) {
	daprtest.OnProfiles(t, []string{"local", "redis"}, func(t *testing.T, r *daprtest.Replica) {
		local := r.Profile() == "local"
		client := r.DaprClient(t)
		bus := daprbus.New(client, r.Cfg.BroadcastPubsub, r.Cfg.BroadcastTopic, "probe")
		if got := bus.Local(context.Background()); got != local {
			t.Fatalf("Local() = %v, want %v", got, local)
		}
		// Publishing still works (or is skipped) without error.
		if err := bus.Publish(context.Background(), []core.Change{{Doc: "a/b", Version: 1}}); err != nil {
			t.Fatal(err)
		}
	})
}
