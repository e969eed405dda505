package service_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/google/uuid"

	"github.com/open-autoglm/autoglm/app/internal/daprtest"
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
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, r2.WSURL(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	send := func(m protocol.Message) {
		b, _ := protocol.Encode(m)
		if err := c.Write(ctx, websocket.MessageText, b); err != nil {
			t.Fatal(err)
		}
	}
	next := func() protocol.Message {
		for {
			_, b, err := c.Read(ctx)
			if err != nil {
				t.Fatal(err)
			}
			m, err := protocol.Decode(b)
			if err != nil {
				t.Fatal(err)
			}
			if m.T != protocol.TPing {
				return m
			}
			send(protocol.Message{T: protocol.TPong, TS: m.TS})
		}
	}
	send(protocol.Message{T: protocol.THello, Client: "watcher", Proto: protocol.Version})
	if m := next(); m.T != protocol.TWelcome {
		t.Fatalf("hello: %+v", m)
	}
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
