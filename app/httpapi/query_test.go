package httpapi_test

// Queries: REST POST /v1/docs/{coll}/query and live queries on every sync
// transport, with read rules (row and field) applied. The HTTP API runs
// in-process over the in-memory store.

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/open-autoglm/autoglm/app/client"
	"github.com/open-autoglm/autoglm/app/internal/testutil"
	"github.com/open-autoglm/autoglm/app/protocol"
)

type queryPage struct {
	Collection string `json:"collection"`
	Items      []struct {
		ID      string         `json:"id"`
		Version int64          `json:"version"`
		Data    map[string]any `json:"data"`
	} `json:"items"`
	Next string `json:"next"`
}

func restQuery(t *testing.T, base, coll, token, body string) (queryPage, httpResult) {
	t.Helper()
	r := rest(t, "POST", base+"/v1/docs/"+coll+"/query", token, body)
	var p queryPage
	if r.status == 200 {
		if err := json.Unmarshal(r.body, &p); err != nil {
			t.Fatal(err)
		}
	}
	return p, r
}

func pageIDs(p queryPage) []string {
	var out []string
	for _, it := range p.Items {
		out = append(out, it.ID)
	}
	return out
}

// put writes doc of coll as token and returns its version.
func put(t *testing.T, base, token, doc, body string) int64 {
	t.Helper()
	r := rest(t, "PUT", base+"/v1/docs/"+doc, token, body)
	if r.status != 200 && r.status != 201 {
		t.Fatalf("PUT %s: %d %s", doc, r.status, r.body)
	}
	var resp struct{ Version int64 }
	_ = json.Unmarshal(r.body, &resp)
	return resp.Version
}

func TestRESTQuery(t *testing.T) {
	t.Parallel()
	base := startAuthedWith(t, readCollections())
	admin := idToken(t, "root", "admin")
	red := idTokenWith(t, "alice", map[string]string{"team": "red"})
	for i, d := range []string{
		`{"team":"red","status":"open","rank":3,"budget":30}`,
		`{"team":"red","status":"open","rank":1,"budget":10}`,
		`{"team":"red","status":"closed","rank":2,"budget":20}`,
		`{"team":"blue","status":"open","rank":0,"budget":5}`,
		`{"team":"red","status":"open","rank":5,"budget":50}`,
	} {
		put(t, base, admin, fmt.Sprintf("t-lww/r%d", i), d)
	}
	// Row rules: alice sees team red only; field rules: never the budget.
	p, r := restQuery(t, base, "t-lww", red, `{"where":[["status","==","open"]],"order_by":[["rank","asc"]],"limit":2}`)
	wantStatus(t, r, 200)
	if got := pageIDs(p); !slices.Equal(got, []string{"r1", "r0"}) || p.Next == "" || p.Collection != "t-lww" {
		t.Fatalf("page 1: %v next %q", got, p.Next)
	}
	noHidden(t, "query page", r.body, "budget")
	p, r = restQuery(t, base, "t-lww", red, `{"where":[["status","==","open"]],"order_by":[["rank","asc"]],"limit":2,"after":"`+p.Next+`"}`)
	wantStatus(t, r, 200)
	if got := pageIDs(p); !slices.Equal(got, []string{"r4"}) || p.Next != "" {
		t.Fatalf("page 2: %v next %q", got, p.Next)
	}
	// A condition or an order key on a field the caller may not read
	// matches none of the documents that hide it.
	for _, q := range []string{`{"where":[["budget",">",0]]}`, `{"order_by":[["budget","desc"]]}`, `{"where":[["budget","==",10]]}`} {
		p, r = restQuery(t, base, "t-lww", red, q)
		wantStatus(t, r, 200)
		if len(p.Items) != 0 {
			t.Fatalf("%s as alice: %v", q, pageIDs(p))
		}
	}
	p, r = restQuery(t, base, "t-lww", admin, `{"where":[["budget",">",15]],"order_by":[["budget","desc"]]}`)
	wantStatus(t, r, 200)
	if got := pageIDs(p); !slices.Equal(got, []string{"r4", "r0", "r2"}) || p.Items[0].Data["budget"] != 50.0 {
		t.Fatalf("admin: %v", p.Items)
	}
	// Refusals name the problem.
	for q, want := range map[string]string{
		`{"where":[["status","like","o%"]]}`: "unknown operator",
		`{"where":[["_id","==","x"]]}`:       "bad path",
		`{"limit":10000}`:                    "over the maximum",
		`{"where":[["rank","<",[1]]]}`:       "needs a number or a string",
	} {
		_, r = restQuery(t, base, "t-lww", red, q)
		wantErr(t, r, 400, "bad_request")
		if !strings.Contains(string(r.body), want) {
			t.Fatalf("%s: %s, want it to name %q", q, r.body, want)
		}
	}
	// A write reaches the queries right after its acknowledgement.
	put(t, base, admin, "t-lww/r9", `{"team":"red","status":"open","rank":-1}`)
	var got []string
	if !testutil.Within(5*time.Second, func() bool {
		p, _ = restQuery(t, base, "t-lww", red, `{"where":[["status","==","open"]],"order_by":[["rank","asc"]],"limit":1}`)
		got = pageIDs(p)
		return slices.Equal(got, []string{"r9"})
	}) {
		t.Fatalf("after a write: %v", got)
	}
}

// queryMsgs reads n messages of query qid and returns them keyed
// "type doc" (the order within one change is not specified).
func queryMsgs(t *testing.T, c syncConn, qid string, n int) map[string]protocol.Message {
	t.Helper()
	out := map[string]protocol.Message{}
	for range n {
		m := c.next(t)
		if m.QID != qid {
			t.Fatalf("message without qid %q: %+v", qid, m)
		}
		out[m.T+" "+m.Doc] = m
	}
	return out
}

// wantKeys checks that got holds each key. A "snap doc" may also come as
// "added doc": a write reaches the query index just after its writer's
// acknowledgement, so a document written right before a sub can enter
// the result just after it.
func wantKeys(t *testing.T, step string, got map[string]protocol.Message, keys ...string) {
	t.Helper()
	for _, k := range keys {
		_, ok := got[k]
		if doc, snap := strings.CutPrefix(k, protocol.TSnap+" "); snap && !ok {
			_, ok = got[protocol.TAdded+" "+doc]
		}
		if !ok {
			t.Fatalf("%s: no %q in %v", step, k, got)
		}
	}
}

// Live queries on every transport: the initial result, enter, update,
// leave by match, by delete and by access, the limit window moving, field
// rules, unsub, and resuming with have.
func TestLiveQuery(t *testing.T) {
	t.Parallel()
	for _, tr := range syncTransports {
		t.Run(tr.name, func(t *testing.T) {
			base := startAuthedWith(t, readCollections())
			admin := idToken(t, "root", "admin")
			red := idTokenWith(t, "alice", map[string]string{"team": "red"})
			put(t, base, admin, "t-lww/a", `{"team":"red","status":"open","rank":1,"budget":1}`)
			put(t, base, admin, "t-lww/b", `{"team":"red","status":"open","rank":2}`)
			put(t, base, admin, "t-lww/c", `{"team":"red","status":"open","rank":3}`)
			put(t, base, admin, "t-lww/x", `{"team":"blue","status":"open","rank":0}`)

			c, _ := tr.open(t, base, red, "q1")
			q := json.RawMessage(`{"where":[["status","==","open"]],"order_by":[["rank","asc"]],"limit":2}`)
			c.send(t, protocol.Message{T: protocol.TSub, Coll: "t-lww", QID: "open", Query: q})
			got := queryMsgs(t, c, "open", 3)
			wantKeys(t, "initial", got, "snap t-lww/a", "snap t-lww/b", "synced ")
			snapA, ok := got["snap t-lww/a"]
			if !ok {
				snapA = got["added t-lww/a"]
			}
			if _, ok := snapA.Data["budget"]; ok || snapA.Data["rank"] != 1.0 {
				t.Fatalf("snapshot through the view: %v", snapA.Data)
			}

			// Update inside the result: a delta.
			va := patchSet(t, base, admin, "t-lww/a", "rank", 1.5)
			patchSet(t, base, admin, "t-lww/a", "budget", 2)
			va++
			got = queryMsgs(t, c, "open", 1)
			if d := got["delta t-lww/a"]; d.V != va-1 || len(d.Ops) != 1 {
				t.Fatalf("update: %+v", got)
			}
			// A change of a hidden field only: a delta without its ops.
			got = queryMsgs(t, c, "open", 1)
			if d, ok := got["delta t-lww/a"]; !ok || d.V != va || len(d.Ops) != 0 {
				t.Fatalf("hidden update: %+v", got)
			}
			// Leave by match: the next one comes into the window.
			put(t, base, admin, "t-lww/a", `{"team":"red","status":"closed","rank":1.5}`)
			got = queryMsgs(t, c, "open", 2)
			wantKeys(t, "leave by match", got, "removed t-lww/a", "added t-lww/c")
			if got["removed t-lww/a"].Why != "no_match" || got["added t-lww/c"].Data["rank"] != 3.0 {
				t.Fatalf("leave by match: %+v", got)
			}
			// Enter ahead of the window: the last one is pushed out.
			put(t, base, admin, "t-lww/d", `{"team":"red","status":"open","rank":0}`)
			got = queryMsgs(t, c, "open", 2)
			wantKeys(t, "enter", got, "added t-lww/d", "removed t-lww/c")
			if got["removed t-lww/c"].Why != "limit" {
				t.Fatalf("pushed out: %+v", got)
			}
			// Leave by delete.
			if r := rest(t, "DELETE", base+"/v1/docs/t-lww/d", admin, ""); r.status != 200 {
				t.Fatalf("delete: %d %s", r.status, r.body)
			}
			got = queryMsgs(t, c, "open", 2)
			wantKeys(t, "delete", got, "removed t-lww/d", "added t-lww/c")
			if got["removed t-lww/d"].Why != "deleted" {
				t.Fatalf("delete: %+v", got)
			}
			// Leave by access: b moves to another team.
			put(t, base, admin, "t-lww/b", `{"team":"blue","status":"open","rank":2}`)
			got = queryMsgs(t, c, "open", 1)
			if m := got["removed t-lww/b"]; m.Why != "not_readable" {
				t.Fatalf("access: %+v", got)
			}
			// A change outside the result and its readable set says nothing;
			// a hidden document entering stays unseen.
			put(t, base, admin, "t-lww/x", `{"team":"blue","status":"open","rank":-5}`)
			vc := patchSet(t, base, admin, "t-lww/c", "note", "n")
			got = queryMsgs(t, c, "open", 1)
			if got["delta t-lww/c"].V != vc {
				t.Fatalf("after a hidden change: %+v", got)
			}

			// unsub: nothing more for the query.
			c.send(t, protocol.Message{T: protocol.TUnsub, QID: "open"})
			c.send(t, protocol.Message{T: protocol.TPing, TS: 7}) // the pong follows the unsub
			if m := c.next(t); m.T != protocol.TPong {
				t.Fatalf("after unsub: %+v", m)
			}
			put(t, base, admin, "t-lww/e", `{"team":"red","status":"open","rank":-1}`)
			c.send(t, protocol.Message{T: protocol.TSub, Doc: "t-lww/e"})
			if m := c.next(t); m.T != protocol.TSnap || m.QID != "" || m.Doc != "t-lww/e" {
				t.Fatalf("after unsub: %+v", m)
			}
			want(t, c, protocol.TSynced, m2v(t, base, admin, "t-lww/e"))

			// Resume with have: c is current (nothing), a left (removed),
			// e is new (snapshot), and only what changed is sent.
			c2, _ := tr.open(t, base, red, "q2")
			c2.send(t, protocol.Message{T: protocol.TSub, Coll: "t-lww", QID: "again", Query: q,
				Have: map[string]int64{"c": vc, "a": va}})
			got = queryMsgs(t, c2, "again", 3)
			wantKeys(t, "resume", got, "snap t-lww/e", "removed t-lww/a", "synced ")
			// Resume behind by one version: only the delta.
			vc2 := patchSet(t, base, admin, "t-lww/c", "note", "m")
			_ = queryMsgs(t, c2, "again", 1)
			c3, _ := tr.open(t, base, red, "q3")
			c3.send(t, protocol.Message{T: protocol.TSub, Coll: "t-lww", QID: "r", Query: q,
				Have: map[string]int64{"c": vc, "e": m2v(t, base, admin, "t-lww/e")}})
			got = queryMsgs(t, c3, "r", 2)
			if d, ok := got["delta t-lww/c"]; !ok || d.V != vc2 {
				t.Fatalf("resume behind: %+v", got)
			}
			wantKeys(t, "resume behind", got, "synced ")

			// Bad queries are refused with the qid.
			c3.send(t, protocol.Message{T: protocol.TSub, Coll: "t-lww", QID: "bad", Query: json.RawMessage(`{"where":[["a","~",1]]}`)})
			if m := c3.next(t); m.T != protocol.TError || m.Code != "bad_request" || m.QID != "bad" || !strings.Contains(m.Msg, "unknown operator") {
				t.Fatalf("bad query: %+v", m)
			}
		})
	}
}

// patchSet sets one field of doc as token and returns the new version.
func patchSet(t *testing.T, base, token, doc, field string, value any) int64 {
	t.Helper()
	v, _ := json.Marshal(value)
	r := rest(t, "PATCH", base+"/v1/docs/"+doc, token, fmt.Sprintf(`{"ops":[{"op":"set","path":%q,"value":%s}]}`, field, v))
	wantStatus(t, r, 200)
	var resp struct{ Version int64 }
	_ = json.Unmarshal(r.body, &resp)
	return resp.Version
}

// m2v is the current version of doc.
func m2v(t *testing.T, base, token, doc string) int64 {
	t.Helper()
	r := rest(t, "GET", base+"/v1/docs/"+doc, token, "")
	wantStatus(t, r, 200)
	var d struct{ Version int64 }
	_ = json.Unmarshal(r.body, &d)
	return d.Version
}

// A refreshed token is matched again: documents the new claims hide leave
// the result, those they show enter it, then synced.
func TestLiveQueryTokenRefresh(t *testing.T) {
	t.Parallel()
	for _, tr := range syncTransports {
		t.Run(tr.name, func(t *testing.T) {
			base := startAuthedWith(t, readCollections())
			admin := idToken(t, "root", "admin")
			put(t, base, admin, "t-lww/r1", `{"team":"red","n":1}`)
			put(t, base, admin, "t-lww/b1", `{"team":"blue","n":2}`)
			c, _ := tr.open(t, base, idTokenWith(t, "alice", map[string]string{"team": "red"}), "rq")
			c.send(t, protocol.Message{T: protocol.TSub, Coll: "t-lww", QID: "all", Query: json.RawMessage(`{}`)})
			wantKeys(t, "initial", queryMsgs(t, c, "all", 2), "snap t-lww/r1", "synced ")
			c.send(t, protocol.Message{T: protocol.TAuth, Token: idTokenWith(t, "alice", map[string]string{"team": "blue"})})
			got := queryMsgs(t, c, "all", 3)
			wantKeys(t, "refresh", got, "snap t-lww/b1", "removed t-lww/r1", "synced ")
			if m := c.next(t); m.T != protocol.TAuth {
				t.Fatalf("after the queries: %+v", m)
			}
			// Live changes follow the new claims.
			put(t, base, admin, "t-lww/r2", `{"team":"red","n":3}`)
			put(t, base, admin, "t-lww/b2", `{"team":"blue","n":4}`)
			if m := queryMsgs(t, c, "all", 1); m["added t-lww/b2"].V != 1 {
				t.Fatalf("after refresh: %+v", m)
			}
		})
	}
}

// The Go client keeps a live query's ordered result (binary frames).
func TestGoClientQuery(t *testing.T) {
	t.Parallel()
	base := startAuthedWith(t, readCollections())
	admin := idToken(t, "root", "admin")
	put(t, base, admin, "t-lww/a", `{"team":"red","rank":2}`)
	put(t, base, admin, "t-lww/b", `{"team":"red","rank":1}`)
	put(t, base, admin, "t-lww/x", `{"team":"blue","rank":0}`)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, protocol.SyncURL(base),
		client.Options{ClientID: "go-q", Token: idTokenWith(t, "alice", map[string]string{"team": "red"})})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	q, err := c.Query(ctx, "t-lww", client.QuerySpec{OrderBy: [][2]string{{"rank", "asc"}}, Limit: 2})
	if err != nil {
		t.Fatal(err)
	}
	ids := func() string {
		var out []string
		for _, it := range q.Results() {
			out = append(out, fmt.Sprintf("%s@%d", it.ID, it.Version))
		}
		return strings.Join(out, ",")
	}
	until := func(want string) {
		for ids() != want {
			select {
			case <-q.Changed():
			case <-ctx.Done():
				t.Fatalf("got %s, want %s", ids(), want)
			}
		}
	}
	until("b@1,a@1")
	patchSet(t, base, admin, "t-lww/a", "rank", 0.5)
	put(t, base, admin, "t-lww/c", `{"team":"red","rank":0}`)
	until("c@1,a@2")
	if _, err := c.Query(ctx, "t-lww", client.QuerySpec{Where: [][3]any{{"rank", "~", 1}}}); err == nil || !strings.Contains(err.Error(), "unknown operator") {
		t.Fatalf("bad query: %v", err)
	}
}
