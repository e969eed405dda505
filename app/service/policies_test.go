package service_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"github.com/sirupsen/logrus"

	"github.com/open-autoglm/autoglm/app/client"
	"github.com/open-autoglm/autoglm/app/config"
	"github.com/open-autoglm/autoglm/app/daprdeps"
	"github.com/open-autoglm/autoglm/app/internal/servicetest"
)

// hlcAt renders an HLC stamp offset from now, as a client clock would
// produce it.
func hlcAt(d time.Duration, node string) string {
	return fmt.Sprintf("%d.0.%s", time.Now().Add(d).UnixMilli(), node)
}

func waitAll(t testing.TB, v int64, docs ...*client.Doc) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, d := range docs {
		if err := d.WaitVersion(ctx, v); err != nil {
			t.Fatal(err)
		}
	}
}

func sameEverywhere(t testing.TB, want map[string]any, docs ...*client.Doc) {
	t.Helper()
	for i, d := range docs {
		if diff := cmp.Diff(want, d.Data()); diff != "" {
			t.Fatalf("client %d (-want +got):\n%s", i, diff)
		}
	}
}

// TestConflictPolicies runs each collection policy end to end through the
// service (in process): REST and WebSocket clients editing at once.
func TestConflictPolicies(t *testing.T) {
	r := servicetest.Start(t, servicetest.Options{})
	id := uuid.NewString()[:8]
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	watchers := func(doc string, n int) []*client.Doc {
		var ds []*client.Doc
		for i := range n {
			c := dial(t, r.WSURL(), client.Options{ClientID: fmt.Sprintf("%s-w%d-%s", strings.ReplaceAll(doc, "/", "-"), i, id)})
			ds = append(ds, subscribe(t, c, doc, 0))
		}
		return ds
	}

	t.Run("LWW", func(t *testing.T) {
		doc := "profiles/u-" + id
		url := r.URL() + "/v1/docs/" + doc
		wantStatus(t, do(t, "PUT", url, `{"display_name":"Ann","email":"a@x.io"}`), 201, "")
		ws := watchers(doc, 2)
		a := dial(t, r.WSURL(), client.Options{ClientID: "lww-a-" + id})
		b := dial(t, r.WSURL(), client.Options{ClientID: "lww-b-" + id})
		// Different fields from the same base: both survive.
		ca := a.Send(doc, 1, client.Set("display_name", "Anna"))
		cb := b.Send(doc, 1, client.Set("email", "anna@x.io"))
		for _, ch := range []<-chan client.Ack{ca, cb} {
			if ack := <-ch; ack.Err != nil {
				t.Fatal(ack.Err)
			}
		}
		// Same field: the later HLC wins, whatever the arrival order.
		wantStatus(t, do(t, "PATCH", url, fmt.Sprintf(`{"base":3,"hlc":%q,"ops":[{"op":"set","path":"locale","value":"de"}]}`, hlcAt(0, "late"))), 200, "")
		wantStatus(t, do(t, "PATCH", url, fmt.Sprintf(`{"base":3,"hlc":%q,"ops":[{"op":"set","path":"locale","value":"fr"}]}`, hlcAt(-time.Minute, "early"))), 200, "")
		waitAll(t, 5, ws...)
		sameEverywhere(t, map[string]any{"display_name": "Anna", "email": "anna@x.io", "locale": "de"}, ws...)
	})

	t.Run("CRDT", func(t *testing.T) {
		doc := "forms/f-" + id
		url := r.URL() + "/v1/docs/" + doc
		wantStatus(t, do(t, "PUT", url, `{"title":"Survey","responses":0,"tags":["draft"]}`), 201, "")
		ws := watchers(doc, 2)
		var chs []<-chan client.Ack
		for i := range 3 {
			c := dial(t, r.WSURL(), client.Options{ClientID: fmt.Sprintf("crdt-%d-%s", i, id)})
			for j := range 10 {
				chs = append(chs, c.Send(doc, 1, client.Inc("responses", 1), client.Set(fmt.Sprintf("answers.q%d", i), j)))
			}
		}
		for _, ch := range chs {
			if ack := <-ch; ack.Err != nil {
				t.Fatal(ack.Err)
			}
		}
		// Concurrent add and remove of one element: add wins.
		wantStatus(t, do(t, "PATCH", url, `{"base":1,"ops":[{"op":"add","path":"tags","value":"urgent"}]}`, "X-Client-ID", "adder"), 200, "")
		wantStatus(t, do(t, "PATCH", url, `{"base":1,"ops":[{"op":"remove","path":"tags","value":"urgent"},{"op":"remove","path":"tags","value":"draft"}]}`, "X-Client-ID", "remover"), 200, "")
		waitAll(t, 33, ws...)
		sameEverywhere(t, map[string]any{"title": "Survey", "responses": 30.0, "tags": []any{"urgent"},
			"answers": map[string]any{"q0": 9.0, "q1": 9.0, "q2": 9.0}}, ws...)
	})

	t.Run("Strict", func(t *testing.T) {
		doc := "orders/o-" + id
		url := r.URL() + "/v1/docs/" + doc
		wantStatus(t, do(t, "PUT", url, `{"customer":"c1","items":["a"],"total":10,"currency":"EUR"}`), 201, "")
		ws := watchers(doc, 1)
		wantStatus(t, do(t, "PATCH", url, `{"base":1,"ops":[{"op":"set","path":"total","value":20}]}`), 200, "")
		// The loser gets everything it needs to merge by hand...
		lost := do(t, "PATCH", url, `{"base":1,"ops":[{"op":"set","path":"total","value":30}]}`)
		wantStatus(t, lost, 409, "conflict")
		d := lost.Body["error"].(map[string]any)["details"].(map[string]any)
		if d["base"] != 1.0 || d["current"] != 2.0 || d["theirs"].(map[string]any)["total"] != 20.0 || len(d["yours"].([]any)) != 1 {
			t.Fatalf("conflict details: %s", lost.Raw)
		}
		// ...merges (20 + its +10) and retries on the current version.
		wantStatus(t, do(t, "PATCH", url, `{"base":2,"ops":[{"op":"set","path":"total","value":30}]}`), 200, "")
		// Over WebSocket the same rejection arrives as a reject message.
		c := dial(t, r.WSURL(), client.Options{ClientID: "strict-" + id})
		ack, err := c.Do(ctx, doc, 1, client.Set("total", 99))
		if err == nil || ack.Err.Code != "conflict" || ack.Err.Details == nil {
			t.Fatalf("stale op over WebSocket: %+v %v", ack, err)
		}
		waitAll(t, 3, ws...)
		sameEverywhere(t, map[string]any{"customer": "c1", "items": []any{"a"}, "total": 30.0, "currency": "EUR"}, ws...)
		// Field rules hold under strict too.
		wantStatus(t, do(t, "PATCH", url, `{"base":3,"ops":[{"op":"set","path":"currency","value":"XXX"}]}`), 422, "field_rule")
	})

	t.Run("Manual", func(t *testing.T) {
		doc := "notes/n-" + id
		url := r.URL() + "/v1/docs/" + doc
		wantStatus(t, do(t, "PUT", url, `{"title":"Plan"}`, "X-Client-ID", "alice", "X-Op-ID", "1"), 201, "")
		ws := watchers(doc, 2)
		wantStatus(t, do(t, "PATCH", url, fmt.Sprintf(`{"base":1,"hlc":%q,"ops":[{"op":"set","path":"title","value":"Plan B"}]}`, hlcAt(0, "bob")), "X-Client-ID", "bob", "X-Op-ID", "1"), 200, "")
		wantStatus(t, do(t, "PATCH", url, fmt.Sprintf(`{"base":1,"hlc":%q,"ops":[{"op":"set","path":"title","value":"Roadmap"}]}`, hlcAt(-time.Second, "carol")), "X-Client-ID", "carol", "X-Op-ID", "1"), 200, "")
		waitAll(t, 3, ws...)
		for i, w := range ws {
			conf, ok := w.Data()["_conflicts"].(map[string]any)
			if !ok || len(conf["title"].([]any)) != 2 {
				t.Fatalf("watcher %d does not see the conflict: %v", i, w.Data())
			}
		}
		// A resolve that has not seen every candidate is refused.
		stale := do(t, "PATCH", url, `{"base":2,"ops":[{"op":"resolve","path":"title","value":"Plan B: roadmap"}]}`, "X-Client-ID", "alice", "X-Op-ID", "2")
		wantStatus(t, stale, 409, "conflict")
		wantStatus(t, do(t, "PATCH", url, `{"base":3,"ops":[{"op":"resolve","path":"title","value":"Plan B: roadmap"}]}`, "X-Client-ID", "alice", "X-Op-ID", "3"), 200, "")
		waitAll(t, 4, ws...)
		sameEverywhere(t, map[string]any{"title": "Plan B: roadmap"}, ws...)
	})

	// REST writes without a base (PATCH without base, PUT, DELETE) and with
	// If-Match as the base: no manual conflict when nobody else writes, and
	// strict accepts a PUT whose If-Match holds.
	t.Run("WritesWithoutBase", func(t *testing.T) {
		url := r.URL() + "/v1/docs/notes/nb-" + id
		noConflict := func(step string) {
			t.Helper()
			g := do(t, "GET", url, "")
			if _, ok := g.Body["data"].(map[string]any)["_conflicts"]; ok {
				t.Fatalf("%s recorded a conflict with nobody else writing: %s", step, g.Raw)
			}
		}
		wantStatus(t, do(t, "PUT", url, `{"title":"Plan"}`, "X-Client-ID", "bob"), 201, "")
		wantStatus(t, do(t, "PATCH", url, `{"ops":[{"op":"set","path":"title","value":"Plan B"}]}`, "X-Client-ID", "alice"), 200, "")
		noConflict("PATCH without base")
		wantStatus(t, do(t, "PUT", url, `{"title":"Plan C"}`, "X-Client-ID", "bob"), 200, "")
		noConflict("PUT")
		wantStatus(t, do(t, "PUT", url, `{"title":"Plan D"}`, "X-Client-ID", "alice", "If-Match", `"3"`), 200, "")
		noConflict("PUT with If-Match")
		wantStatus(t, do(t, "PATCH", url, `{"ops":[{"op":"set","path":"title","value":"Plan E"}]}`, "X-Client-ID", "bob", "If-Match", `"4"`), 200, "")
		noConflict("PATCH with If-Match")
		wantStatus(t, do(t, "DELETE", url, "", "X-Client-ID", "alice", "If-Match", `"5"`), 200, "")

		order := r.URL() + "/v1/docs/orders/nb-" + id
		wantStatus(t, do(t, "PUT", order, `{"customer":"c1","items":["a"],"total":10,"currency":"EUR"}`, "X-Client-ID", "bob"), 201, "")
		wantStatus(t, do(t, "PATCH", order, `{"ops":[{"op":"set","path":"total","value":11}]}`, "X-Client-ID", "alice"), 409, "conflict")
		wantStatus(t, do(t, "PUT", order, `{"customer":"c1","items":["a"],"total":12,"currency":"EUR"}`, "X-Client-ID", "alice", "If-Match", `"1"`), 200, "")
	})

	t.Run("OfflineEdits", func(t *testing.T) {
		doc := "forms/off-" + id
		url := r.URL() + "/v1/docs/" + doc
		wantStatus(t, do(t, "PUT", url, `{"title":"T0","responses":0}`), 201, "")
		ws := watchers(doc, 1)
		// Online edits meanwhile.
		wantStatus(t, do(t, "PATCH", url, `{"base":1,"ops":[{"op":"set","path":"title","value":"T-online"},{"op":"inc","path":"responses","value":1}]}`), 200, "")
		// An offline client comes back with three ops made an hour ago on
		// version 1, replayed in its op-id order.
		for i, ops := range []string{
			`[{"op":"set","path":"title","value":"T-offline"}]`,
			`[{"op":"inc","path":"responses","value":5}]`,
			`[{"op":"set","path":"answers.q1","value":"yes"}]`,
		} {
			body := fmt.Sprintf(`{"base":1,"hlc":%q,"ops":%s}`, fmt.Sprintf("%d.%d.off", time.Now().Add(-time.Hour).UnixMilli(), i), ops)
			wantStatus(t, do(t, "PATCH", url, body, "X-Client-ID", "offline-"+id, "X-Op-ID", fmt.Sprint(i+1)), 200, "")
		}
		waitAll(t, 5, ws...)
		// The older title loses to the newer one; the increments add up; the
		// untouched field lands.
		sameEverywhere(t, map[string]any{"title": "T-online", "responses": 6.0, "answers": map[string]any{"q1": "yes"}}, ws...)
	})

	t.Run("ApprovalWorkflow", func(t *testing.T) {
		doc := "approvals/a-" + id
		url := r.URL() + "/v1/docs/" + doc
		ws := watchers(doc, 1)
		wantStatus(t, do(t, "PUT", url, `{"title":"Laptop","amount":900,"status":"submitted"}`, "X-Roles", "editor"), 422, "invalid_transition")
		wantStatus(t, do(t, "PUT", url, `{"title":"Laptop","amount":900,"status":"draft"}`, "X-Roles", "editor"), 201, "")
		step := func(to, roles string, status int, code string) {
			t.Helper()
			wantStatus(t, do(t, "PATCH", url, fmt.Sprintf(`{"ops":[{"op":"set","path":"status","value":%q}]}`, to), "X-Roles", roles), status, code)
		}
		step("approved", "approver", 422, "invalid_transition") // draft → approved is not a transition
		step("submitted", "editor", 200, "")
		step("approved", "editor", 403, "forbidden") // only an approver approves
		step("approved", "approver", 200, "")
		step("draft", "editor", 422, "invalid_transition") // approved is final
		wantStatus(t, do(t, "PATCH", url, `{"ops":[{"op":"set","path":"decision_note","value":"ok"}]}`, "X-Roles", "editor"), 403, "forbidden")
		waitAll(t, 3, ws...)
		if ws[0].Data()["status"] != "approved" {
			t.Fatalf("subscriber sees %v", ws[0].Data())
		}
		// Over WebSocket, roles come from hello while authentication is off.
		doc2 := "approvals/b-" + id
		ed := dial(t, r.WSURL(), client.Options{ClientID: "ed-" + id, Roles: []string{"editor"}})
		ap := dial(t, r.WSURL(), client.Options{ClientID: "ap-" + id, Roles: []string{"approver"}})
		if _, err := ed.Do(ctx, doc2, 0, client.Set("title", "Desk"), client.Set("status", "draft")); err != nil {
			t.Fatal(err)
		}
		if _, err := ed.Do(ctx, doc2, 1, client.Set("status", "submitted")); err != nil {
			t.Fatal(err)
		}
		if a, err := ed.Do(ctx, doc2, 2, client.Set("status", "rejected")); err == nil || a.Err.Code != "forbidden" {
			t.Fatalf("editor rejecting: %+v %v", a, err)
		}
		if _, err := ap.Do(ctx, doc2, 2, client.Set("status", "rejected")); err != nil {
			t.Fatalf("approver rejecting: %v", err)
		}
	})
}

// TestBadCollectionsConfigStopsStart: a broken collections file stops the
// service with a message naming the file, the line and the problem.
func TestBadCollectionsConfigStopsStart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "collections.yaml")
	bad := "collections:\n  forms:\n    policy: crdt\n  orders:\n    policy: optimistic\n"
	if err := os.WriteFile(path, []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.Collections = path
	log := logrus.New()
	log.SetOutput(os.Stderr)
	_, err := daprdeps.NewService(cfg, log)
	if err == nil {
		t.Fatal("service started with a bad collections file")
	}
	if msg := err.Error(); !strings.Contains(msg, path+":5") || !strings.Contains(msg, "optimistic") {
		t.Fatalf("error %q does not name the file, line 5 and the bad policy", msg)
	}
}
