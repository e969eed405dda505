package httpapi_test

// Red-team cases on the outbound paths that readrules_test.go and
// query_test.go do not reach: what a refusal, a live query's removal, a
// conditional GET, presence or a list page could tell a caller about data
// its read rules hide. The HTTP API runs in-process over the in-memory
// store, with JWT authentication on.

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/sirupsen/logrus"

	"github.com/open-autoglm/autoglm/app/auth"
	"github.com/open-autoglm/autoglm/app/collections/schemafile"
	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/httpapi"
	"github.com/open-autoglm/autoglm/app/internal/servicetest"
	"github.com/open-autoglm/autoglm/app/merge"
	"github.com/open-autoglm/autoglm/app/protocol"
)

// leakCollections: "t-lww" and "p-lww" as in readCollections, and "sized",
// readable by its team with budget readable by admins, whose documents
// may hold at most 400 bytes.
// startLeak starts a replica with the collections of these tests and
// returns its URL and an admin's token.
func startLeak(t *testing.T) (base, admin string) {
	t.Helper()
	return startAuthedWith(t, leakCollections()), idToken(t, "root", "admin")
}

func leakCollections() string {
	return readCollections() + `  sized:
    limits: {max_doc_bytes: 400}
    read_rules: {claims: {team: team}, roles: [admin]}
    fields:
      budget: {readable_by: [admin]}
`
}

// A document leaving a live query's result because the reader may no
// longer read it (or the field the query reads) is removed as
// not_readable, whatever else the same change did: "no_match" would tell
// the reader that a value it may not read no longer matches.
func TestLiveQueryRemovalTellsNothingHidden(t *testing.T) {
	t.Parallel()
	base, admin := startLeak(t)
	for _, tr := range syncTransports {
		t.Run(tr.name, func(t *testing.T) {
			id := uuid.NewString()[:8]
			// The row becomes unreadable in the change that also moves the
			// field the query matches on.
			put(t, base, admin, "t-lww/"+id, `{"team":"red","status":"open"}`)
			bob := idTokenWith(t, "bob", map[string]string{"team": "red"}, "user")
			c, _ := tr.open(t, base, bob, "lq")
			c.send(t, protocol.Message{T: protocol.TSub, Coll: "t-lww", QID: "q",
				Query: json.RawMessage(`{"where":[["status","==","open"]]}`)})
			got := queryMsgs(t, c, "q", 2)
			wantKeys(t, "initial", got, "snap t-lww/"+id, "synced ")
			put(t, base, admin, "t-lww/"+id, `{"team":"blue","status":"closed"}`)
			got = queryMsgs(t, c, "q", 1)
			if m, ok := got["removed t-lww/"+id]; !ok || m.Why != "not_readable" {
				t.Fatalf("a document that became unreadable: %+v, want removed not_readable", got)
			}

			// The field the query reads becomes hidden (the reader gives the
			// document up) in the change that also sets it.
			ann := idTokenWith(t, "ann", map[string]string{"team": "red"}, "user")
			put(t, base, ann, "p-lww/"+id, `{"owner":"ann","team":"red","secret":"s1"}`)
			a, _ := tr.open(t, base, ann, "lq2")
			a.send(t, protocol.Message{T: protocol.TSub, Coll: "p-lww", QID: "s",
				Query: json.RawMessage(`{"where":[["secret","==","s1"]]}`)})
			got = queryMsgs(t, a, "s", 2)
			wantKeys(t, "owner's query", got, "snap p-lww/"+id, "synced ")
			wantStatus(t, rest(t, "PATCH", base+"/v1/docs/p-lww/"+id, ann,
				`{"ops":[{"op":"unset","path":"owner"},{"op":"set","path":"secret","value":"s2"}]}`), 200)
			got = queryMsgs(t, a, "s", 1)
			if m, ok := got["removed p-lww/"+id]; !ok || m.Why != "not_readable" {
				t.Fatalf("a document whose queried field became hidden: %+v, want removed not_readable", got)
			}
		})
	}
}

// A size refusal does not tell a writer that may read only part of the
// document how large the rest of it is.
func TestTooLargeHidesTheSizeOfHiddenFields(t *testing.T) {
	t.Parallel()
	base, admin := startLeak(t)
	bob := idTokenWith(t, "bob", map[string]string{"team": "red"}, "user")
	for _, tr := range syncTransports {
		t.Run(tr.name, func(t *testing.T) {
			doc := "sized/" + uuid.NewString()[:8]
			url := base + "/v1/docs/" + doc
			wantStatus(t, rest(t, "PUT", url, admin, `{"team":"red","budget":"`+strings.Repeat("b", 137)+`"}`), 201)
			big := strings.Repeat("x", 300)
			r := rest(t, "PATCH", url, bob, `{"ops":[{"op":"set","path":"name","value":"`+big+`"}]}`)
			wantErr(t, r, 413, "too_large")
			noHidden(t, "a REST size refusal", r.body, "bytes (")
			c, _ := tr.open(t, base, bob, "sz")
			subscribe(t, c, doc, 0, 1)
			c.send(t, protocol.Message{T: protocol.TOp, Doc: doc, Op: 1, Ops: setOp(doc, 1, 0, "name", big).Ops})
			m := want(t, c, protocol.TReject, 0)
			b, _ := json.Marshal(m)
			if m.Code != "too_large" {
				t.Fatalf("got %s, want a too_large reject", b)
			}
			noHidden(t, "a size reject", b, "bytes (")
			// An admin, who may read all of it, is told the size.
			r = rest(t, "PATCH", url, admin, `{"ops":[{"op":"set","path":"name","value":"`+big+`"}]}`)
			wantErr(t, r, 413, "too_large")
			if !strings.Contains(string(r.body), "bytes (limit 400)") {
				t.Fatalf("an admin's size refusal: %s", r.body)
			}
		})
	}
}

// A conditional GET answers a caller who may not read the document
// not_readable, never 304: a 304 would confirm the version it guessed.
func TestConditionalGetOfAnUnreadableDocument(t *testing.T) {
	t.Parallel()
	base, admin := startLeak(t)
	cat := idTokenWith(t, "cat", map[string]string{"team": "blue"}, "user")
	url := base + "/v1/docs/t-lww/" + uuid.NewString()[:8]
	wantStatus(t, rest(t, "PUT", url, admin, `{"team":"red"}`), 201)
	for _, method := range []string{"GET", "HEAD"} {
		r := call(t, method, url, "", nil, "Authorization", "Bearer "+cat, "If-None-Match", `"1"`)
		if r.status != 403 || r.header.Get("ETag") != "" {
			t.Fatalf("%s with the right ETag by another team: %d ETag %q, want 403 without an ETag", method, r.status, r.header.Get("ETag"))
		}
	}
}

// A watcher that may not read a document hears nobody's presence there.
func TestPresenceOnAnUnreadableDocument(t *testing.T) {
	t.Parallel()
	base, admin := startLeak(t)
	for _, tr := range syncTransports {
		t.Run(tr.name, func(t *testing.T) {
			doc := "t-lww/" + uuid.NewString()[:8]
			wantStatus(t, rest(t, "PUT", base+"/v1/docs/"+doc, admin, `{"team":"red"}`), 201)
			bob, _ := tr.open(t, base, idTokenWith(t, "bob", map[string]string{"team": "red"}, "user"), "pb")
			subscribe(t, bob, doc, 0, 1)
			bob.send(t, protocol.Message{T: protocol.TPresence, Doc: doc, Data: map[string]any{"cursor": "bob-was-here"}})
			cat, _ := tr.open(t, base, idTokenWith(t, "cat", map[string]string{"team": "blue"}, "user"), "pc")
			got := subscribe(t, cat, doc, 0, 1)
			if len(got) != 1 {
				t.Fatalf("cat subscribing: %+v", got)
			}
			wantNotReadable(t, got[0], 1)
			bob.send(t, protocol.Message{T: protocol.TPresence, Doc: doc, Data: map[string]any{"cursor": "bob-again"}})
			// The ping's pong comes after anything relayed before it.
			cat.send(t, protocol.Message{T: protocol.TPing, TS: 9})
			if m := cat.next(t); m.T != protocol.TPong {
				t.Fatalf("cat heard %+v on a document it may not read", m)
			}
		})
	}
}

// idCursorLister is a store listing whose cursor names the last id of its
// page, as daprstore's ("<shard>.<id>") does.
type idCursorLister struct {
	ids  []string // sorted
	docs map[string]map[string]any
}

func (l idCursorLister) List(_ context.Context, coll, cursor string, limit int) (core.Page, error) {
	i := 0
	if cursor != "" {
		after := strings.TrimPrefix(cursor, "0.")
		i, _ = slices.BinarySearch(l.ids, after)
		if i < len(l.ids) && l.ids[i] == after {
			i++
		}
	}
	var p core.Page
	for ; i < len(l.ids); i++ {
		if len(p.IDs) == limit {
			p.Next = "0." + p.IDs[len(p.IDs)-1]
			break
		}
		p.IDs = append(p.IDs, l.ids[i])
	}
	return p, nil
}

func (l idCursorLister) Documents(_ context.Context, coll string, ids []string) ([]*core.Document, error) {
	var out []*core.Document
	for _, id := range ids {
		out = append(out, &core.Document{Key: core.Key{Collection: coll, ID: id}, Version: 1, State: &merge.Doc{Data: l.docs[id]}})
	}
	return out, nil
}

// A list page's cursor names no document the caller may not read, on a
// store whose cursors name ids: paging through a collection with any
// page size shows the readable documents once each, in order, and nothing
// of the others, not even their ids.
func TestListCursorNamesNoHiddenDocument(t *testing.T) {
	t.Parallel()
	cols, err := schemafile.Parse("collections.yaml", []byte(leakCollections()))
	if err != nil {
		t.Fatal(err)
	}
	jwt, err := auth.NewJWT(context.Background(), auth.Options{Secret: []byte(idSecret)})
	if err != nil {
		t.Fatal(err)
	}
	l := idCursorLister{docs: map[string]map[string]any{}}
	var readable []string
	// Readable documents between runs of hidden ones, one of them longer
	// than the largest page.
	for i := range 720 {
		team := "blue"
		if i%3 == 0 && (i < 10 || i > 700) {
			team = "red"
		}
		id := fmt.Sprintf("%04d-%s", i, team)
		l.ids = append(l.ids, id)
		l.docs[id] = map[string]any{"team": team}
		if team == "red" {
			readable = append(readable, id)
		}
	}
	srv := &httpapi.Server{Log: logrus.New(), Lister: l,
		Access: httpapi.Access{Verifier: jwt, Policy: auth.Policy{Collections: cols, Enforce: true}}}
	ts := httptest.NewServer(srv.Handler())
	defer ts.Close()
	bob := idTokenWith(t, "bob", map[string]string{"team": "red"}, "user")
	for _, limit := range []string{"1", "2", "3", "500"} {
		var got []string
		cursor := ""
		for range 50 {
			r := rest(t, "GET", ts.URL+"/v1/docs/t-lww?limit="+limit+"&cursor="+cursor, bob, "")
			wantStatus(t, r, 200)
			noHidden(t, "a list page with limit "+limit, r.body, "blue")
			var page struct {
				Items []struct{ ID string }
				Next  string
			}
			if err := json.Unmarshal(r.body, &page); err != nil {
				t.Fatal(err)
			}
			for _, it := range page.Items {
				got = append(got, it.ID)
			}
			if cursor = page.Next; cursor == "" {
				break
			}
		}
		if !slices.Equal(got, readable) {
			t.Fatalf("limit %s: listed %v, want %v", limit, got, readable)
		}
	}
}

// The open conflicts of a manual document on a field the reader may not
// read reach it on no path: not in GET, changes, list, query, a snapshot
// or the delta that recorded them.
func TestManualConflictsOnHiddenFields(t *testing.T) {
	t.Parallel()
	base, admin := startLeak(t)
	bob := idTokenWith(t, "bob", map[string]string{"team": "red"}, "user")
	id := uuid.NewString()[:8]
	doc := "t-manual/" + id
	url := base + "/v1/docs/" + doc
	wantStatus(t, rest(t, "PUT", url, admin, `{"team":"red","budget":111111,"name":"n"}`), 201)
	c, _ := syncTransports[0].open(t, base, bob, "mc")
	subscribe(t, c, doc, 0, 1)
	for i, client := range []string{"one", "two"} {
		r := call(t, "PATCH", url, "application/json",
			[]byte(`{"base":1,"ops":[{"op":"set","path":"budget","value":`+[]string{"222222", "333333"}[i]+`}]}`),
			"Authorization", "Bearer "+admin, "X-Client-ID", client)
		wantStatus(t, r, 200)
	}
	g := rest(t, "GET", url, admin, "")
	if !strings.Contains(string(g.body), `"_conflicts"`) {
		t.Fatalf("no conflict was recorded: %s", g.body)
	}
	hidden := []string{"budget", "111111", "222222", "333333"}
	wantOps(t, c.next(t), 2, `[]`)
	d := c.next(t)
	b, _ := json.Marshal(d)
	noHidden(t, "the delta recording the conflict", b, hidden...)
	for what, r := range map[string]httpResult{
		"GET":              rest(t, "GET", url, bob, ""),
		"changes":          rest(t, "GET", url+"/changes?since=1", bob, ""),
		"changes snapshot": rest(t, "GET", url+"/changes?since=0", bob, ""),
		"list":             rest(t, "GET", base+"/v1/docs/t-manual", bob, ""),
		"query":            rest(t, "POST", base+"/v1/docs/t-manual/query", bob, `{"where":[["name","==","n"]]}`),
	} {
		wantStatus(t, r, 200)
		noHidden(t, what, r.body, hidden...)
	}
	c2, _ := syncTransports[0].open(t, base, bob, "mc2")
	for _, m := range subscribe(t, c2, doc, 0, 3) {
		b, _ := json.Marshal(m)
		noHidden(t, "a snapshot", b, hidden...)
	}
}

// With authentication on, the workflow's actor is the token: roles a
// client names (X-Roles, or roles and an author in an op) move no state
// machine.
func TestWorkflowActorComesFromTheToken(t *testing.T) {
	t.Parallel()
	base := servicetest.Start(t, servicetest.Options{Secret: idSecret}).URL()
	editor := idToken(t, "ed", "editor")
	doc := "approvals/" + uuid.NewString()[:8]
	url := base + "/v1/docs/" + doc
	wantStatus(t, rest(t, "PUT", url, editor, `{"title":"t","status":"draft"}`), 201)
	wantStatus(t, rest(t, "PATCH", url, editor, `{"ops":[{"op":"set","path":"status","value":"submitted"}]}`), 200)
	r := call(t, "PATCH", url, "application/json", []byte(`{"ops":[{"op":"set","path":"status","value":"approved"}]}`),
		"Authorization", "Bearer "+editor, "X-Roles", "approver")
	wantErr(t, r, 403, "forbidden")
	for _, tr := range syncTransports {
		c, _ := tr.open(t, base, editor, "wf-"+tr.name)
		c.send(t, protocol.Message{T: protocol.TOp, Doc: doc, Op: 1, Roles: []string{"approver"}, By: "boss",
			Ops: setOp(doc, 1, 0, "status", "approved").Ops})
		if m := c.next(t); m.T != protocol.TReject || m.Code != "forbidden" {
			t.Fatalf("%s: an editor naming the approver role: %+v", tr.name, m)
		}
	}
	if g := rest(t, "GET", url, editor, ""); !strings.Contains(string(g.body), `"submitted"`) {
		t.Fatalf("the state moved: %s", g.body)
	}
}

// A live query whose condition or order key is a field the reader may not
// read matches none of the documents that hide it, now or as the field
// changes: neither the result nor its order tells the hidden values.
func TestLiveQueryOnAHiddenField(t *testing.T) {
	t.Parallel()
	base, admin := startLeak(t)
	red := idTokenWith(t, "alice", map[string]string{"team": "red"}, "user")
	id := uuid.NewString()[:8]
	put(t, base, admin, "t-crdt/"+id+"-1", `{"team":"red","budget":10}`)
	put(t, base, admin, "t-crdt/"+id+"-2", `{"team":"red","budget":20}`)
	for _, tr := range syncTransports {
		t.Run(tr.name, func(t *testing.T) {
			c, _ := tr.open(t, base, red, "hq")
			for qid, q := range map[string]string{
				"where": `{"where":[["budget",">",15]]}`,
				"order": `{"order_by":[["budget","desc"]],"limit":1}`,
				"ne":    `{"where":[["budget","!=",10]]}`,
			} {
				c.send(t, protocol.Message{T: protocol.TSub, Coll: "t-crdt", QID: qid, Query: json.RawMessage(q)})
				if m := c.next(t); m.T != protocol.TSynced || m.QID != qid {
					t.Fatalf("%s: %+v, want synced with no result", q, m)
				}
			}
			patchSet(t, base, admin, "t-crdt/"+id+"-1", "budget", 30)
			// The ping's pong follows anything the change sent.
			c.send(t, protocol.Message{T: protocol.TPing, TS: 5})
			if m := c.next(t); m.T != protocol.TPong {
				t.Fatalf("after a hidden field changed: %+v", m)
			}
		})
	}
}

// A reader catching up across the change that made a document readable to
// it gets the document as it is, never the history it could not read then:
// a value written and overwritten while another team held the document
// reaches it on no path.
func TestCatchUpAcrossARuleChange(t *testing.T) {
	t.Parallel()
	base, admin := startLeak(t)
	cat := idTokenWith(t, "cat", map[string]string{"team": "blue"}, "user")
	for _, tr := range syncTransports {
		t.Run(tr.name, func(t *testing.T) {
			id := uuid.NewString()[:8]
			doc := "t-lww/" + id
			url := base + "/v1/docs/" + doc
			wantStatus(t, rest(t, "PUT", url, admin, `{"team":"red","name":"n","k":"`+id+`"}`), 201)
			patchSet(t, base, admin, doc, "name", "red-only-draft")
			patchSet(t, base, admin, doc, "name", "n")
			patchSet(t, base, admin, doc, "team", "blue")
			r := rest(t, "GET", url+"/changes?since=1", cat, "")
			wantStatus(t, r, 200)
			noHidden(t, "changes since 1", r.body, "red-only-draft")
			c, _ := tr.open(t, base, cat, "cu")
			for _, m := range subscribe(t, c, doc, 1, 4) {
				b, _ := json.Marshal(m)
				noHidden(t, "catch-up from version 1", b, "red-only-draft")
			}
			c.send(t, protocol.Message{T: protocol.TSub, Coll: "t-lww", QID: "cu", Have: map[string]int64{id: 1},
				Query: json.RawMessage(`{"where":[["k","==","` + id + `"]]}`)})
			got := queryMsgs(t, c, "cu", 2)
			if _, ok := got[protocol.TRemoved+" "+doc]; ok {
				// The query index took the sub before the last writes (they
				// reach it just after their acks): the document left the
				// result as the index saw it, and enters it once the index
				// has them.
				maps.Copy(got, queryMsgs(t, c, "cu", 1))
			}
			wantKeys(t, "resumed live query", got, "snap "+doc, "synced ")
			b, _ := json.Marshal(got)
			noHidden(t, "a live query resumed from version 1", b, "red-only-draft")
		})
	}
}
