package service_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/open-autoglm/autoglm/app/internal/clienttest"
	"github.com/open-autoglm/autoglm/app/internal/daprtest"
	"github.com/open-autoglm/autoglm/app/internal/testutil"
	"github.com/open-autoglm/autoglm/app/protocol"
)

// A change committed on one replica reaches the live queries on another:
// the broadcast feeds the other replica's index, which decides enter,
// update and leave in memory.
func TestLiveQueryAcrossReplicas(t *testing.T) {
	topic := "changes-" + uuid.NewString()[:8]
	r1 := daprtest.Start(t, daprtest.Options{Profile: "redis", Topic: topic})
	r2 := daprtest.Start(t, daprtest.Options{Profile: "redis", Topic: topic})
	coll := "tickets"
	id := "o-" + uuid.NewString()[:8]
	send, next := watch(t, r2)
	q := fmt.Sprintf(`{"where":[["owner","==",%q],["status","==","open"]]}`, id)
	send(protocol.Message{T: protocol.TSub, Coll: coll, QID: "mine", Query: json.RawMessage(q)})
	if m := next(); m.T != protocol.TSynced || m.QID != "mine" {
		t.Fatalf("initial: %+v", m)
	}
	doc := r1.URL() + "/v1/docs/" + coll + "/" + id
	if r := do(t, "PUT", doc, fmt.Sprintf(`{"owner":%q,"status":"open","n":1}`, id)); r.Status != 201 {
		t.Fatalf("create on r1: %d %s", r.Status, r.Raw)
	}
	if m := next(); m.T != protocol.TAdded || m.QID != "mine" || m.Doc != coll+"/"+id || m.V != 1 {
		t.Fatalf("added: %+v", m)
	}
	if r := do(t, "PATCH", doc, `{"ops":[{"op":"set","path":"n","value":2}]}`); r.Status != 200 {
		t.Fatalf("patch on r1: %d %s", r.Status, r.Raw)
	}
	if m := next(); m.T != protocol.TDelta || m.QID != "mine" || m.V != 2 {
		t.Fatalf("delta: %+v", m)
	}
	if r := do(t, "PATCH", doc, `{"ops":[{"op":"set","path":"status","value":"closed"}]}`); r.Status != 200 {
		t.Fatalf("patch on r1: %d %s", r.Status, r.Raw)
	}
	if m := next(); m.T != protocol.TRemoved || m.QID != "mine" || m.Why != "no_match" {
		t.Fatalf("removed: %+v", m)
	}
	// The REST query on the other replica answers from its index.
	r := do(t, "POST", r2.URL()+"/v1/docs/"+coll+"/query", fmt.Sprintf(`{"where":[["owner","==",%q]]}`, id))
	if r.Status != 200 {
		t.Fatalf("query on r2: %d %s", r.Status, r.Raw)
	}
	items, _ := r.Body["items"].([]any)
	if len(items) != 1 || items[0].(map[string]any)["version"] != 3.0 {
		t.Fatalf("query on r2: %s", r.Raw)
	}
}

// watch opens a JSON WebSocket session on r (hello done) for the rest of
// the test and returns functions to send and to read the next message
// that is not a ping.
func watch(t *testing.T, r *daprtest.Replica) (send func(protocol.Message), next func() protocol.Message) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	_, send, next = clienttest.Session(t, ctx, r.WSURL(), "watcher")
	return send, next
}

// Queries on every profile: the index loads from the store's listing (the
// documents written before the first query), a REST query pages it in
// order, and a live query hears what enters and leaves.
func TestQueriesEachProfile(t *testing.T) {
	daprtest.EachProfile(t, func(t *testing.T, r *daprtest.Replica) {
		coll := "tickets"
		tag := "t" + uuid.NewString()[:8]
		for i := range 5 {
			doc := fmt.Sprintf("%s/v1/docs/%s/%s-%d", r.URL(), coll, tag, i)
			if res := do(t, "PUT", doc, fmt.Sprintf(`{"tag":%q,"rank":%d}`, tag, 5-i)); res.Status != 201 {
				t.Fatalf("PUT: %d %s", res.Status, res.Raw)
			}
		}
		page := func(after string) (ids []string, next string) {
			body := fmt.Sprintf(`{"where":[["tag","==",%q]],"order_by":[["rank","asc"]],"limit":3`, tag)
			if after != "" {
				body += fmt.Sprintf(`,"after":%q`, after)
			}
			res := do(t, "POST", r.URL()+"/v1/docs/"+coll+"/query", body+"}")
			if res.Status != 200 {
				t.Fatalf("query: %d %s", res.Status, res.Raw)
			}
			items, _ := res.Body["items"].([]any)
			for _, it := range items {
				ids = append(ids, it.(map[string]any)["id"].(string))
			}
			next, _ = res.Body["next"].(string)
			return ids, next
		}
		// The last write reaches the index just after its acknowledgement.
		testutil.Eventually(t, 10*time.Second, "all 5 indexed", func() bool {
			ids, next := page("")
			more, _ := page(next)
			return len(ids)+len(more) == 5
		})
		ids, next := page("")
		more, last := page(next)
		if got := fmt.Sprint(append(ids, more...)); got != fmt.Sprintf("[%[1]s-4 %[1]s-3 %[1]s-2 %[1]s-1 %[1]s-0]", tag) || next == "" || last != "" {
			t.Fatalf("pages: %s (next %q, then %q)", got, next, last)
		}
		send, recv := watch(t, r)
		send(protocol.Message{T: protocol.TSub, Coll: coll, QID: "top", Query: json.RawMessage(
			fmt.Sprintf(`{"where":[["tag","==",%q]],"order_by":[["rank","asc"]],"limit":1}`, tag))})
		if m := recv(); m.T != protocol.TSnap || m.Doc != coll+"/"+tag+"-4" {
			t.Fatalf("initial: %+v", m)
		}
		if m := recv(); m.T != protocol.TSynced {
			t.Fatalf("synced: %+v", m)
		}
		if res := do(t, "PUT", fmt.Sprintf("%s/v1/docs/%s/%s-new", r.URL(), coll, tag), fmt.Sprintf(`{"tag":%q,"rank":0}`, tag)); res.Status != 201 {
			t.Fatalf("PUT: %d %s", res.Status, res.Raw)
		}
		got := map[string]string{}
		for range 2 {
			m := recv()
			got[m.T] = m.Doc + " " + m.Why
		}
		if got["added"] != coll+"/"+tag+"-new " || got["removed"] != coll+"/"+tag+"-4 limit" {
			t.Fatalf("window: %v", got)
		}
	})
}
