package daprquery_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/open-autoglm/autoglm/app/config"
	"github.com/open-autoglm/autoglm/app/daprquery"
	"github.com/open-autoglm/autoglm/app/daprstore"
	"github.com/open-autoglm/autoglm/app/internal/daprtest"
	"github.com/open-autoglm/autoglm/app/internal/rest"
	"github.com/open-autoglm/autoglm/app/internal/testutil"
	"github.com/open-autoglm/autoglm/app/query"
	"github.com/open-autoglm/autoglm/app/query/live"
	"github.com/open-autoglm/autoglm/app/query/querytest"
)

type engines struct {
	store *daprquery.Engine
	index *live.Engine
}

// start runs a postgres-profile replica (whose commits go through the
// transport) and both engines over its sidecar.
func start(t *testing.T) (*daprtest.Replica, engines) {
	r := daprtest.Start(t, daprtest.Options{Profile: "postgres", Config: func(c *config.Config) { c.QueryAPI = true }})
	c := r.DaprClient(t)
	lister := daprstore.New(c, r.Cfg.StateStore)
	tr := daprquery.NewTransport(c, r.DaprURL(), r.Cfg.DaprAPIToken, r.Cfg.AppID)
	e := engines{
		store: daprquery.New(daprquery.Options{Client: c, Store: r.Cfg.StateStore, Transport: tr, Lister: lister}),
		index: live.New(lister),
	}
	t.Cleanup(e.index.Close)
	return r, e
}

func put(t *testing.T, r *daprtest.Replica, coll, id string, data map[string]any) {
	t.Helper()
	b, _ := json.Marshal(data)
	res, err := rest.Do("PUT", fmt.Sprintf("%s/v1/docs/%s/%s", r.URL(), coll, id), string(b))
	if err != nil || res.Status/100 != 2 {
		t.Fatalf("PUT %s: %v %d %s", id, err, res.Status, res.Raw)
	}
}

// ready waits until the store engine serves coll (its backfill is done).
func ready(t *testing.T, e engines, coll string) {
	t.Helper()
	q, _ := query.Parse([]byte(`{"where":[["a","==",1]]}`))
	testutil.Eventually(t, 60*time.Second, "the query API serving the collection", func() bool {
		_, _, ok, err := e.store.Query(context.Background(), coll, q, nil)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	})
}

func render(docs []*live.Doc, more bool) string {
	var b strings.Builder
	for _, d := range docs {
		data, _ := json.Marshal(d.Data)
		fmt.Fprintf(&b, "%s@%d %s\n", d.ID, d.Version, data)
	}
	fmt.Fprintf(&b, "more=%v", more)
	return b.String()
}

// compare runs q on both engines; served is false when the store engine
// passed it to the index.
func compare(t *testing.T, e engines, coll string, q query.Query, admit live.Admit) (served bool) {
	t.Helper()
	ctx := context.Background()
	got, gmore, ok, err := e.store.Query(ctx, coll, q, admit)
	if err != nil {
		t.Fatal(err)
	}
	want, wmore, err := e.index.Query(ctx, coll, q, admit)
	if err != nil {
		t.Fatal(err)
	}
	if ok {
		if g, w := render(got, gmore), render(want, wmore); g != w {
			t.Fatalf("query %+v\nquery API:\n%s\nindex:\n%s", q, g, w)
		}
	}
	return ok
}

// The query API and the in-memory index give the same results: a table of
// queries (each operator, limits, cursors, read rules hiding documents
// inside a limit window) and random queries over random documents.
func TestEnginesAgree(t *testing.T) {
	r, e := start(t)
	coll := "q" + strings.ReplaceAll(uuid.NewString()[:8], "-", "")
	rng := rand.New(rand.NewPCG(15, 15))
	for i := range 120 {
		d := querytest.RandomData(rng)
		d["status"] = []string{"open", "done", "5", "true"}[i%4]
		d["n"] = []any{5.0, 1000000.0, "5", true, 0.5}[i%5]
		d["rank"] = float64(rng.IntN(20))
		put(t, r, coll, fmt.Sprintf("d%03d", i), d)
	}
	ready(t, e, coll)
	e.index.Flush()

	table := []string{
		`{"where":[["status","==","open"]]}`,
		`{"where":[["status","==","open"]],"order_by":[["rank","desc"]],"limit":7}`,
		`{"where":[["status","==","5"]]}`, // numbers 5 print as "5" too: matched again in memory
		`{"where":[["n","==",5]]}`,
		`{"where":[["n","==",0.5]]}`,
		`{"where":[["n","==",true]]}`,
		`{"where":[["status","in",["done","true"]],["rank","<",10]],"order_by":[["rank","asc"]],"limit":5}`,
		`{"where":[["status","==","done"],["tags","contains","p"]]}`,
		`{"where":[["status","==","open"],["a","!=",1]],"limit":3}`,
		`{"where":[["o.x","==","q"]]}`,
		`{"where":[["a","in",[1,2,"p"]]],"order_by":[["b","desc"],["rank","asc"]],"limit":4}`,
	}
	for _, s := range table {
		q, err := query.Parse([]byte(s))
		if err != nil {
			t.Fatal(err)
		}
		if !compare(t, e, coll, q, nil) {
			t.Fatalf("%s: not served by the query API", s)
		}
		// Read rules: documents with an even rank are hidden; the window
		// still holds Limit readable ones.
		hide := func(data map[string]any) bool { f, _ := data["rank"].(float64); return int(f)%2 == 1 }
		compare(t, e, coll, q, hide)
		// The next page through a cursor.
		if q.Limit > 0 {
			docs, more, _, err := e.store.Query(context.Background(), coll, q, nil)
			if err != nil {
				t.Fatal(err)
			}
			if more {
				last := docs[len(docs)-1]
				c := q.CursorOf(query.Item{ID: last.ID, Data: last.Data})
				q.After = &c
				compare(t, e, coll, q, nil)
			}
		}
	}
	// Not expressible: the index serves them.
	for _, s := range []string{`{"where":[["rank","<",3]]}`, `{"where":[["n","==",1000000]]}`, `{}`} {
		q, _ := query.Parse([]byte(s))
		if compare(t, e, coll, q, nil) {
			t.Fatalf("%s: served by the query API", s)
		}
	}
	served := 0
	for range 300 {
		if compare(t, e, coll, querytest.RandomQuery(rng), nil) {
			served++
		}
	}
	t.Logf("random queries served by the query API: %d of 300", served)
	if served == 0 {
		t.Fatal("no random query was served by the query API")
	}
}

// A document jsonb cannot hold (a NUL character) is stored as bytes, and
// its collection goes back to the index: the query API would miss it.
func TestUnstorableDocumentFallsBack(t *testing.T) {
	r, e := start(t)
	coll := "q" + strings.ReplaceAll(uuid.NewString()[:8], "-", "")
	put(t, r, coll, "a", map[string]any{"status": "open"})
	ready(t, e, coll)
	q, _ := query.Parse([]byte(`{"where":[["status","==","open"]]}`))
	put(t, r, coll, "b", map[string]any{"status": "open", "note": "nul\x00here"})
	docs, _, ok, err := e.store.Query(context.Background(), coll, q, nil)
	if err != nil {
		t.Fatal(err)
	}
	if ok {
		t.Fatalf("served by the query API after a document stored as bytes: %s", render(docs, false))
	}
	e.index.Flush()
	docs, _, err = e.index.Query(context.Background(), coll, q, nil)
	if err != nil || len(docs) != 2 {
		t.Fatalf("index: %v %s", err, render(docs, false))
	}
}
