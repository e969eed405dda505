package service_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"

	"github.com/open-autoglm/autoglm/app/client"
	"github.com/open-autoglm/autoglm/app/config"
	"github.com/open-autoglm/autoglm/app/internal/clienttest"
	"github.com/open-autoglm/autoglm/app/internal/daprtest"
	"github.com/open-autoglm/autoglm/app/internal/rest"
	"github.com/open-autoglm/autoglm/app/internal/servicetest"
	"github.com/open-autoglm/autoglm/app/protocol"
)

type resp = rest.Response

// do sends a request; an error sending it fails the test.
var do = rest.Must

func errCode(r resp) string { return r.Code() }

// restCase is a request (hdr: header name/value pairs) and the error
// answer it must get.
type restCase struct {
	name, method, url, body string
	hdr                     []string
	status                  int
	code                    string
}

// runREST sends each case in a subtest of its own and checks the answer;
// it returns how many cases it ran.
func runREST(t *testing.T, cases []restCase) int {
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			wantStatus(t, do(t, c.method, c.url, c.body, c.hdr...), c.status, c.code)
		})
	}
	return len(cases)
}

func wantStatus(t testing.TB, r resp, status int, code string) {
	t.Helper()
	if r.Status != status || errCode(r) != code {
		t.Fatalf("got %d %q, want %d %q; body %s", r.Status, errCode(r), status, code, r.Raw)
	}
}

// TestREST exercises the document API against a real daprd on every
// profile, including the failure paths, and checks that failed requests
// leave stored data exactly as it was.
func TestREST(t *testing.T) {
	daprtest.EachProfile(t, func(t *testing.T, r *daprtest.Replica) {
		coll := "p" + strings.ReplaceAll(uuid.NewString()[:8], "-", "")
		doc := r.URL() + "/v1/docs/" + coll + "/u1"

		t.Run("CreateGetPatch", func(t *testing.T) {
			wantStatus(t, do(t, "GET", doc, ""), 404, "not_found")
			c := do(t, "PUT", doc, `{"name":"Ann","age":3,"tags":["a"]}`)
			wantStatus(t, c, 201, "")
			if c.Body["version"] != 1.0 || c.Header.Get("ETag") != `"1"` {
				t.Fatalf("create: %s %v", c.Raw, c.Header)
			}
			p := do(t, "PATCH", doc, `{"base":1,"ops":[{"op":"inc","path":"age","value":2},{"op":"set","path":"address.city","value":"Oslo"}]}`)
			wantStatus(t, p, 200, "")
			g := do(t, "GET", doc, "")
			want := map[string]any{"doc": coll + "/u1", "version": 2.0, "data": map[string]any{
				"name": "Ann", "age": 5.0, "tags": []any{"a"}, "address": map[string]any{"city": "Oslo"}}}
			if d := cmp.Diff(want, g.Body); d != "" {
				t.Fatalf("document (-want +got):\n%s", d)
			}
			if g.Header.Get("ETag") != `"2"` || g.Header.Get("X-Autoglm-Version") != "test" {
				t.Fatalf("headers: %v", g.Header)
			}
			if nm := do(t, "GET", doc, "", "If-None-Match", `"2"`); nm.Status != 304 {
				t.Fatalf("If-None-Match: %d", nm.Status)
			}
		})

		t.Run("Preconditions", func(t *testing.T) {
			wantStatus(t, do(t, "PUT", doc, `{"name":"Bob"}`, "If-Match", `"1"`), 412, "precondition_failed")
			wantStatus(t, do(t, "PUT", doc, `{"name":"Bob"}`, "If-None-Match", "*"), 412, "precondition_failed")
			wantStatus(t, do(t, "PATCH", doc, `{"base":99,"ops":[{"op":"set","path":"x","value":1}]}`), 409, "conflict")
			ok := do(t, "PUT", doc, `{"name":"Bob"}`, "If-Match", `"2"`)
			wantStatus(t, ok, 200, "")
			g := do(t, "GET", doc, "")
			if d := cmp.Diff(map[string]any{"name": "Bob"}, g.Body["data"]); d != "" || g.Body["version"] != 3.0 {
				t.Fatalf("PUT replaces the document (-want +got):\n%s\n%s", d, g.Raw)
			}
		})

		t.Run("Idempotent", func(t *testing.T) {
			hdr := []string{"X-Client-ID", "rest-1", "X-Op-ID", "7"}
			a := do(t, "PATCH", doc, `{"ops":[{"op":"inc","path":"n","value":1}]}`, hdr...)
			b := do(t, "PATCH", doc, `{"ops":[{"op":"inc","path":"n","value":1}]}`, hdr...)
			wantStatus(t, a, 200, "")
			if b.Body["version"] != a.Body["version"] || b.Body["duplicate"] != true {
				t.Fatalf("retry: first %s, second %s", a.Raw, b.Raw)
			}
			if g := do(t, "GET", doc, ""); g.Body["data"].(map[string]any)["n"] != 1.0 {
				t.Fatalf("op applied twice: %s", g.Raw)
			}
		})

		t.Run("BadInput", func(t *testing.T) {
			before := do(t, "GET", doc, "").Raw
			big := `{"x":"` + strings.Repeat("a", 2<<20) + `"}`
			runREST(t, []restCase{
				{"MalformedJSON", "PUT", doc, `{"name":`, nil, 400, "bad_request"},
				{"NotAnObject", "PUT", doc, `[1,2]`, nil, 400, "bad_request"},
				{"TrailingData", "PUT", doc, `{"a":1} {"b":2}`, nil, 400, "bad_request"},
				{"UnknownPatchField", "PATCH", doc, `{"opz":[]}`, nil, 400, "bad_request"},
				{"BadCollection", "GET", r.URL() + "/v1/docs/Bad$Coll/u1", "", nil, 400, "invalid_name"},
				{"BadID", "PUT", r.URL() + "/v1/docs/" + coll + "/a:b", `{"a":1}`, nil, 400, "invalid_name"},
				{"Oversized", "PUT", doc, big, nil, 413, "too_large"},
				{"UnknownOp", "PATCH", doc, `{"ops":[{"op":"explode","path":"a"}]}`, nil, 422, "invalid_op"},
				{"ReservedPath", "PATCH", doc, `{"ops":[{"op":"set","path":"_x","value":1}]}`, nil, 422, "invalid_op"},
				{"IncString", "PATCH", doc, `{"ops":[{"op":"inc","path":"name","value":1}]}`, nil, 422, "invalid_op"},
				{"NoOps", "PATCH", doc, `{"ops":[]}`, nil, 422, "invalid_op"},
				{"NegativeBase", "PATCH", doc, `{"base":-1,"ops":[{"op":"set","path":"a","value":1}]}`, nil, 422, "invalid_op"},
				{"BadHLC", "PATCH", doc, `{"hlc":"yesterday","ops":[{"op":"set","path":"a","value":1}]}`, nil, 400, "bad_request"},
				{"FutureHLC", "PATCH", doc, fmt.Sprintf(`{"hlc":"%d.0.c9","ops":[{"op":"set","path":"a","value":1}]}`, time.Now().Add(time.Hour).UnixMilli()), nil, 422, "clock_skew"},
				{"BadIfMatch", "PUT", doc, `{"a":1}`, []string{"If-Match", "abc"}, 400, "bad_request"},
				{"OpIDWithoutClient", "PATCH", doc, `{"ops":[{"op":"set","path":"a","value":1}]}`, []string{"X-Op-ID", "3"}, 400, "bad_request"},
				{"WrongMediaType", "PUT", doc, `{"a":1}`, []string{"Content-Type", "text/plain"}, 415, "unsupported_media"},
				{"BadSince", "GET", doc + "/changes?since=x", "", nil, 400, "bad_request"},
				{"BadLimit", "GET", r.URL() + "/v1/docs/" + coll + "?limit=0", "", nil, 400, "bad_request"},
				{"BadCursor", "GET", r.URL() + "/v1/docs/" + coll + "?cursor=zz", "", nil, 400, "bad_request"},
				{"Method", "POST", doc, `{}`, nil, 405, "method_not_allowed"},
				{"NoRoute", "GET", r.URL() + "/v2/nothing", "", nil, 404, "not_found"},
			})
			if after := do(t, "GET", doc, "").Raw; after != before {
				t.Fatalf("stored document changed by bad input:\nbefore %s\nafter  %s", before, after)
			}
		})

		t.Run("ChangesAndDelete", func(t *testing.T) {
			cur := do(t, "GET", doc, "").Body["version"].(float64)
			ch := do(t, "GET", fmt.Sprintf("%s/changes?since=%d", doc, int(cur)-2), "")
			cs := ch.Body["changes"].([]any)
			if len(cs) != 2 || cs[1].(map[string]any)["v"] != cur {
				t.Fatalf("changes: %s", ch.Raw)
			}
			// The log still starts at version 1: since=0 is answered from it.
			all := do(t, "GET", doc+"/changes?since=0", "")
			if cs, _ := all.Body["changes"].([]any); all.Body["snapshot"] != nil || float64(len(cs)) != cur || cs[0].(map[string]any)["v"] != 1.0 {
				t.Fatalf("since=0 wants the whole log: %s", all.Raw)
			}
			del := do(t, "DELETE", doc, "")
			wantStatus(t, del, 200, "")
			if del.Body["deleted"] != true || del.Body["version"] != cur+1 {
				t.Fatalf("delete: %s", del.Raw)
			}
			wantStatus(t, do(t, "GET", doc, ""), 404, "not_found")
			wantStatus(t, do(t, "DELETE", doc, ""), 404, "not_found")
			re := do(t, "PUT", doc, `{"again":true}`)
			if re.Status != 201 || re.Body["version"] != cur+2 {
				t.Fatalf("re-create continues the version line: %s", re.Raw)
			}
		})

		t.Run("ListPages", func(t *testing.T) {
			lc := coll + "l"
			for i := range 7 {
				wantStatus(t, do(t, "PUT", fmt.Sprintf("%s/v1/docs/%s/d%d", r.URL(), lc, i), fmt.Sprintf(`{"i":%d}`, i)), 201, "")
			}
			do(t, "DELETE", r.URL()+"/v1/docs/"+lc+"/d3", "")
			seen := map[string]bool{}
			cursor := ""
			for pages := 0; pages < 10; pages++ {
				l := do(t, "GET", r.URL()+"/v1/docs/"+lc+"?limit=2&cursor="+cursor, "")
				wantStatus(t, l, 200, "")
				for _, it := range l.Body["items"].([]any) {
					seen[it.(map[string]any)["id"].(string)] = true
				}
				next, _ := l.Body["next"].(string)
				if next == "" {
					break
				}
				cursor = next
			}
			want := map[string]bool{"d0": true, "d1": true, "d2": true, "d4": true, "d5": true, "d6": true}
			if d := cmp.Diff(want, seen); d != "" {
				t.Fatalf("listing (-want +got):\n%s", d)
			}
		})

		t.Run("ThroughSidecar", func(t *testing.T) {
			// Dapr service invocation: another service calls through its
			// sidecar; here the replica's own sidecar invokes its app id.
			inv := r.DaprURL() + "/v1.0/invoke/autoglm/method/v1/docs/" + coll + "/inv"
			tok := []string{"dapr-api-token", r.Cfg.DaprAPIToken}
			wantStatus(t, do(t, "PUT", inv, `{"via":"dapr"}`, tok...), 201, "")
			p := do(t, "PATCH", inv, `{"ops":[{"op":"set","path":"step","value":2}]}`, tok...)
			wantStatus(t, p, 200, "")
			g := do(t, "GET", inv, "", tok...)
			if g.Body["version"] != 2.0 || g.Body["data"].(map[string]any)["step"] != 2.0 {
				t.Fatalf("through sidecar: %s", g.Raw)
			}
			wantStatus(t, do(t, "PATCH", inv, `{"ops":[{"op":"nope","path":"a"}]}`, tok...), 422, "invalid_op")
		})

		t.Run("Health", func(t *testing.T) {
			wantStatus(t, do(t, "GET", r.URL()+"/healthz", ""), 200, "")
			wantStatus(t, do(t, "GET", r.URL()+"/readyz", ""), 200, "")
			if v := do(t, "GET", r.URL()+"/version", ""); v.Body["version"] != "test" {
				t.Fatalf("version: %s", v.Raw)
			}
		})
	})
}

// recorder notes the versions a client receives per document.
type recorder struct {
	mu       sync.Mutex
	versions map[string][]int64
	snaps    int
}

func (rc *recorder) hook(m protocol.Message, _ int) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	switch m.T {
	case protocol.TDelta, protocol.TAck:
		if m.T == protocol.TAck && (m.Dup || m.V == 0) {
			return
		}
		if rc.versions == nil {
			rc.versions = map[string][]int64{}
		}
		rc.versions[m.Doc] = append(rc.versions[m.Doc], m.V)
	case protocol.TSnap:
		rc.snaps++
	}
}

func (rc *recorder) got(doc string) []int64 {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]int64(nil), rc.versions[doc]...)
}

func dial(t testing.TB, url string, opt client.Options) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return clienttest.Dial(t, ctx, url, opt)
}

func subscribe(t testing.TB, c *client.Client, doc string, since int64) *client.Doc {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return clienttest.Subscribe(t, ctx, c, doc, since)
}

func dense(from, to int64) []int64 {
	var out []int64
	for v := from; v <= to; v++ {
		out = append(out, v)
	}
	return out
}

// TestTwoClientsThousandOps: A sends 1,000 ops on one document; B receives
// every version exactly once, in order; both copies end identical.
func TestTwoClientsThousandOps(t *testing.T) {
	daprtest.EachProfile(t, func(t *testing.T, r *daprtest.Replica) {
		doc := "forms/f-" + uuid.NewString()[:8]
		var recA, recB recorder
		a := dial(t, r.WSURL(), client.Options{ClientID: "A-" + r.Profile(), OnMessage: recA.hook})
		b := dial(t, r.WSURL(), client.Options{ClientID: "B-" + r.Profile(), OnMessage: recB.hook})
		da := subscribe(t, a, doc, 0)
		db := subscribe(t, b, doc, 0)

		const n = 1000
		start := time.Now()
		acks := make([]<-chan client.Ack, 0, n)
		for i := range n {
			acks = append(acks, a.Send(doc, 0, client.Set(fmt.Sprintf("f%d", i%20), i), client.Inc("count", 1)))
		}
		for i, ch := range acks {
			select {
			case ack := <-ch:
				if ack.Err != nil {
					t.Fatalf("op %d rejected: %v", i+1, ack.Err)
				}
			case <-time.After(30 * time.Second):
				t.Fatalf("op %d: no ack", i+1)
			}
		}
		elapsed := time.Since(start)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := db.WaitVersion(ctx, n); err != nil {
			t.Fatal(err)
		}
		if d := cmp.Diff(dense(1, n), recB.got(doc)); d != "" {
			t.Fatalf("B's versions (-want +got):\n%s", d)
		}
		if d := cmp.Diff(dense(1, n), recA.got(doc)); d != "" {
			t.Fatalf("A's acks (-want +got):\n%s", d)
		}
		if d := cmp.Diff(da.Data(), db.Data()); d != "" {
			t.Fatalf("A and B differ (-A +B):\n%s", d)
		}
		if db.Data()["count"] != float64(n) {
			t.Fatalf("count = %v, want %d", db.Data()["count"], n)
		}
		stored := do(t, "GET", r.URL()+"/v1/docs/"+doc, "")
		if d := cmp.Diff(stored.Body["data"], any(db.Data())); d != "" {
			t.Fatalf("client copy differs from the store (-store +B):\n%s", d)
		}
		t.Logf("%s: %d ops acked in %v (%.0f ops/s)", r.Profile(), n, elapsed.Round(time.Millisecond), n/elapsed.Seconds())
	})
}

// TestRestartResume: documents and versions survive a restart of app and
// daprd; a client resumes from its version and receives only what it
// missed.
func TestRestartResume(t *testing.T) {
	daprtest.EachProfile(t, func(t *testing.T, r *daprtest.Replica) {
		doc := "profiles/r-" + uuid.NewString()[:8]
		url := r.URL() + "/v1/docs/" + doc
		for i := range 5 {
			do(t, "PATCH", url, fmt.Sprintf(`{"ops":[{"op":"set","path":"step","value":%d}]}`, i))
		}
		b := dial(t, r.WSURL(), client.Options{ClientID: "B"})
		db := subscribe(t, b, doc, 0)
		if db.Version() != 5 {
			t.Fatalf("B at %d, want 5", db.Version())
		}
		before := do(t, "GET", url, "").Raw
		b.Close()

		r.Restart()

		if after := do(t, "GET", url, "").Raw; after != before {
			t.Fatalf("document changed across restart:\nbefore %s\nafter  %s", before, after)
		}
		for i := 5; i < 8; i++ {
			wantStatus(t, do(t, "PATCH", url, fmt.Sprintf(`{"ops":[{"op":"set","path":"step","value":%d}]}`, i)), 200, "")
		}
		var rec recorder
		b2 := dial(t, r.WSURL(), client.Options{ClientID: "B", OnMessage: rec.hook})
		db2 := subscribe(t, b2, doc, db.Version())
		if d := cmp.Diff([]int64{6, 7, 8}, rec.got(doc)); d != "" || rec.snaps != 0 {
			t.Fatalf("resume sent (-want +got):\n%s\nsnapshots: %d", d, rec.snaps)
		}
		if db2.Version() != 8 {
			t.Fatalf("resumed copy at %d", db2.Version())
		}
	})
}

// TestReconnectResendsPendingOps: ops sent while the connection is down are
// delivered after reconnect, each applied once.
func TestReconnectResendsPendingOps(t *testing.T) {
	r := servicetest.Start(t, servicetest.Options{})
	doc := "forms/rc-" + uuid.NewString()[:8]
	a := dial(t, r.WSURL(), client.Options{ClientID: "RC", MinBackoff: 20 * time.Millisecond})
	da := subscribe(t, a, doc, 0)
	first := a.Send(doc, 0, client.Inc("n", 1))
	<-first
	a.Drop()
	var chs []<-chan client.Ack
	for range 10 {
		chs = append(chs, a.Send(doc, 0, client.Inc("n", 1)))
	}
	for i, ch := range chs {
		select {
		case ack := <-ch:
			if ack.Err != nil {
				t.Fatalf("op %d: %v", i, ack.Err)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("op %d not answered after reconnect", i)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := da.WaitVersion(ctx, 11); err != nil {
		t.Fatal(err)
	}
	g := do(t, "GET", r.URL()+"/v1/docs/"+doc, "")
	if g.Body["version"] != 11.0 || g.Body["data"].(map[string]any)["n"] != 11.0 {
		t.Fatalf("after reconnect: %s", g.Raw)
	}
}

// TestWebSocketProtocolErrors: bad frames get their documented codes and the
// replica stays healthy.
func TestWebSocketProtocolErrors(t *testing.T) {
	r := servicetest.Start(t, servicetest.Options{})
	doc := "forms/pe-" + uuid.NewString()[:8]
	c := dial(t, r.WSURL(), client.Options{ClientID: "PE"})
	subscribe(t, c, doc, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cases := []struct {
		ops  []any
		code string
	}{
		{nil, "invalid_op"},
		{[]any{map[string]any{"op": "set", "path": "", "value": 1}}, "invalid_op"},
		{[]any{map[string]any{"op": "boom", "path": "a"}}, "invalid_op"},
	}
	for _, tc := range cases {
		b, _ := json.Marshal(tc.ops)
		_, err := c.Do(ctx, doc, 0, toFieldOps(t, b)...)
		if err == nil || !strings.Contains(err.Error(), tc.code) {
			t.Fatalf("ops %s: got %v, want %s", b, err, tc.code)
		}
	}
	if _, err := c.Do(ctx, doc, 0, client.Set("ok", true)); err != nil {
		t.Fatalf("connection unusable after rejections: %v", err)
	}
}

func toFieldOps(t testing.TB, b []byte) []client.FieldOp {
	t.Helper()
	var ops []client.FieldOp
	if err := json.Unmarshal(b, &ops); err != nil {
		t.Fatal(err)
	}
	return ops
}

// TestTwoReplicasHotDocument: writers on two replicas race on one document
// through Redis. ETag conflicts are resolved by re-applying, versions stay
// dense, every acknowledged op is in the log exactly once, and every client
// ends with the same copy.
func TestTwoReplicasHotDocument(t *testing.T) {
	topic := "changes-" + uuid.NewString()[:8]
	r1 := daprtest.Start(t, daprtest.Options{Profile: "redis", Topic: topic})
	r2 := daprtest.Start(t, daprtest.Options{Profile: "redis", Topic: topic})
	doc := "forms/hot-" + uuid.NewString()[:8]
	const perClient = 100
	var clients []*client.Client
	var docs []*client.Doc
	for i, r := range []*daprtest.Replica{r1, r2, r1, r2} {
		c := dial(t, r.WSURL(), client.Options{ClientID: fmt.Sprintf("w%d", i)})
		clients = append(clients, c)
		docs = append(docs, subscribe(t, c, doc, 0))
	}
	var wg sync.WaitGroup
	acked := make([][]client.Ack, len(clients))
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var chs []<-chan client.Ack
			for j := range perClient {
				chs = append(chs, c.Send(doc, 0, client.Inc("n", 1), client.Set(fmt.Sprintf("w%d", i), j)))
			}
			for _, ch := range chs {
				select {
				case a := <-ch:
					acked[i] = append(acked[i], a)
				case <-time.After(60 * time.Second):
					t.Errorf("client %d: ack missing", i)
					return
				}
			}
		}()
	}
	wg.Wait()
	total := 0
	for i, as := range acked {
		for _, a := range as {
			if a.Err != nil {
				t.Fatalf("client %d: %v", i, a.Err)
			}
			total++
		}
	}
	want := int64(total)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i, d := range docs {
		if err := d.WaitVersion(ctx, want); err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
	}
	for i := 1; i < len(docs); i++ {
		if d := cmp.Diff(docs[0].Data(), docs[i].Data()); d != "" {
			t.Fatalf("client %d differs (-0 +%d):\n%s", i, i, d)
		}
	}
	if docs[0].Data()["n"] != float64(total) {
		t.Fatalf("n = %v after %d acked increments", docs[0].Data()["n"], total)
	}
	// The op log holds every acknowledged op once, at the version its ack
	// named. (Version 1 is the setup's create.)
	seen := map[string]int64{}
	for since := int64(1); since < want; {
		ch := do(t, "GET", fmt.Sprintf("%s/v1/docs/%s/changes?since=%d", r1.URL(), doc, since), "")
		cs := ch.Body["changes"].([]any)
		if len(cs) == 0 {
			t.Fatalf("log ends at %d of %d: %s", since, want, ch.Raw)
		}
		for _, c := range cs {
			m := c.(map[string]any)
			v := int64(m["v"].(float64))
			if v != since+1 {
				t.Fatalf("log not dense: %d after %d", v, since)
			}
			since = v
			seen[fmt.Sprintf("%s/%v", m["by"], m["op"])] = v
		}
	}
	for i, as := range acked {
		for _, a := range as {
			if a.Version == 1 {
				continue
			}
			if v, ok := seen[fmt.Sprintf("w%d/%d", i, a.Op)]; !ok || v != a.Version {
				t.Fatalf("acked op w%d/%d at version %d: log has version %d", i, a.Op, a.Version, v)
			}
		}
	}
	t.Logf("%d ops from 4 clients on 2 replicas: versions 1..%d dense, all acked ops logged once", total, want)
}

// TestAntiEntropyRepairsLostBroadcasts: two replicas whose broadcasts never
// reach each other (different topics) still converge: each re-checks its
// quiet watched documents against the store.
func TestAntiEntropyRepairsLostBroadcasts(t *testing.T) {
	fast := func(c *config.Config) { c.AntiEntropy = 200 * time.Millisecond }
	r1 := daprtest.Start(t, daprtest.Options{Profile: "redis", Config: fast})
	r2 := daprtest.Start(t, daprtest.Options{Profile: "redis", Config: fast})
	doc := "forms/ae-" + uuid.NewString()[:8]
	b := dial(t, r2.WSURL(), client.Options{ClientID: "ae-b"})
	db := subscribe(t, b, doc, 0)
	start := time.Now()
	for i := range 5 {
		wantStatus(t, do(t, "PATCH", r1.URL()+"/v1/docs/"+doc, fmt.Sprintf(`{"ops":[{"op":"set","path":"step","value":%d}]}`, i)), func() int {
			if i == 0 {
				return 201
			}
			return 200
		}(), "")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := db.WaitVersion(ctx, 5); err != nil {
		t.Fatal(err)
	}
	if db.Data()["step"] != 4.0 {
		t.Fatalf("repaired copy: %v", db.Data())
	}
	t.Logf("converged %v after the last write without any broadcast", time.Since(start).Round(time.Millisecond))
}

// TestTwoReplicasInProcess: replicas sharing an in-memory store and broker
// are one cluster. A write on one reaches a subscriber of the other live,
// through the broadcast alone (anti-entropy is off), and both serve the
// same stored document.
func TestTwoReplicasInProcess(t *testing.T) {
	noRepair := func(c *config.Config) { c.AntiEntropy = 0 }
	r1 := servicetest.Start(t, servicetest.Options{Config: noRepair})
	r2 := servicetest.Start(t, servicetest.Options{Store: r1.Store, Broker: r1.Broker, Config: noRepair})
	doc := "forms/two-" + uuid.NewString()[:8]
	wantStatus(t, do(t, "PUT", r1.URL()+"/v1/docs/"+doc, `{"title":"a"}`), 201, "")
	d2 := subscribe(t, dial(t, r2.WSURL(), client.Options{ClientID: "on-r2"}), doc, 0)
	waitAll(t, 1, d2)
	wantStatus(t, do(t, "PATCH", r1.URL()+"/v1/docs/"+doc, `{"ops":[{"op":"set","path":"title","value":"b"}]}`), 200, "")
	waitAll(t, 2, d2)
	sameEverywhere(t, map[string]any{"title": "b"}, d2)
	if g := do(t, "GET", r2.URL()+"/v1/docs/"+doc, ""); g.Body["version"] != 2.0 {
		t.Fatalf("r2 serves %s", g.Raw)
	}
}
