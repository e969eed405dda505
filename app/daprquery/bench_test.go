package daprquery_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	dapr "github.com/dapr/go-sdk/client"

	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/daprquery"
	"github.com/open-autoglm/autoglm/app/daprstore"
	"github.com/open-autoglm/autoglm/app/internal/daprtest"
	"github.com/open-autoglm/autoglm/app/merge"
	"github.com/open-autoglm/autoglm/app/query"
)

// benchColl holds the benchmark's 100,000 documents; it is kept in the
// database between runs (loading takes a while).
const (
	benchColl = "qbench100k"
	benchDocs = 100_000
)

// loadBench stores benchDocs documents {status, rank, owner} (the live
// engine benchmark's) as tagged JSON with bulk saves and marks the
// collection ready. The collection listing is not written: only the query
// API reads this collection.
func loadBench(b *testing.B, c dapr.Client, tr *daprquery.Transport, store string) {
	ctx := context.Background()
	last, err := c.GetState(ctx, store, fmt.Sprintf("%s:d%06d", benchColl, benchDocs-1), nil)
	if err != nil {
		b.Fatal(err)
	}
	marker, err := c.GetState(ctx, store, daprquery.MarkerKey(benchColl), nil)
	if err != nil {
		b.Fatal(err)
	}
	if len(last.Value) > 0 && len(marker.Value) > 0 {
		return
	}
	start := time.Now()
	jsonMeta := map[string]string{"contentType": "application/json"}
	for lo := 0; lo < benchDocs; lo += 1000 {
		items := make([]*dapr.SetStateItem, 0, 1000)
		for i := lo; i < lo+1000; i++ {
			d := core.Document{Version: 1, State: &merge.Doc{Data: map[string]any{
				"status": fmt.Sprintf("s%d", i%10), "rank": i % 1000, "owner": fmt.Sprintf("u%d", i%500)}}}
			body, err := json.Marshal(d)
			if err != nil {
				b.Fatal(err)
			}
			body, _ = tr.Tag(benchColl, body)
			items = append(items, &dapr.SetStateItem{Key: fmt.Sprintf("%s:d%06d", benchColl, i), Value: body, Metadata: jsonMeta})
		}
		if err := c.SaveBulkState(ctx, store, items...); err != nil {
			b.Fatal(err)
		}
	}
	if err := c.SaveState(ctx, store, daprquery.MarkerKey(benchColl), []byte(`{"state":"ready"}`), nil); err != nil {
		b.Fatal(err)
	}
	b.Logf("loaded %d documents in %v", benchDocs, time.Since(start).Round(time.Millisecond))
}

// BenchmarkQueryLimit50Postgres is an initial query (limit 50, ordered)
// over 100,000 documents through the PostgreSQL query API: the store
// returns the documents holding the "==" value, the engine matches, sorts
// and cuts them.
func BenchmarkQueryLimit50Postgres(b *testing.B) {
	r := daprtest.Start(b, daprtest.Options{Profile: "postgres"})
	c := r.DaprClient(b)
	tr := daprquery.NewTransport(c, r.DaprURL(), r.Cfg.DaprAPIToken, r.Cfg.AppID)
	loadBench(b, c, tr, r.Cfg.StateStore)
	e := daprquery.New(daprquery.Options{Client: c, Store: r.Cfg.StateStore, Transport: tr, Lister: daprstore.New(c, r.Cfg.StateStore)})
	for _, bc := range []struct{ name, q string }{
		{"status-10000-candidates", `{"where":[["status","==","s3"]],"order_by":[["rank","desc"]],"limit":50}`},
		{"owner-200-candidates", `{"where":[["owner","==","u7"]],"order_by":[["rank","asc"]],"limit":50}`},
	} {
		b.Run(bc.name, func(b *testing.B) {
			q, err := query.Parse([]byte(bc.q))
			if err != nil {
				b.Fatal(err)
			}
			took := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for range b.N {
				start := time.Now()
				docs, _, ok, err := e.Query(context.Background(), benchColl, q, nil)
				took = append(took, time.Since(start))
				if err != nil || !ok || len(docs) != 50 {
					b.Fatal(err, ok, len(docs))
				}
			}
			slices.Sort(took)
			b.ReportMetric(float64(took[len(took)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(took[len(took)*99/100].Microseconds()), "p99-µs")
		})
	}
}

// BenchmarkCommitPostgres is a write's store work (load the document,
// commit the next version) on PostgreSQL, with documents stored as bytes
// over gRPC transactions (grpc) and as tagged JSON over the HTTP
// transaction API (transport), interleaved in one run.
func BenchmarkCommitPostgres(b *testing.B) {
	r := daprtest.Start(b, daprtest.Options{Profile: "postgres"})
	c := r.DaprClient(b)
	tr := daprquery.NewTransport(c, r.DaprURL(), r.Cfg.DaprAPIToken, r.Cfg.AppID)
	coll := fmt.Sprintf("qcommit%d", time.Now().UnixNano()%1_000_000)
	data := map[string]any{"title": "a document of a few fields", "status": "open", "rank": 7,
		"tags": []any{"a", "b"}, "owner": map[string]any{"id": "u1", "name": "someone"}}
	for _, v := range []struct {
		name   string
		client daprstore.Client
	}{{"grpc", c}, {"transport", tr}} {
		b.Run(v.name, func(b *testing.B) {
			s := daprstore.New(v.client, r.Cfg.StateStore)
			k := core.Key{Collection: coll, ID: v.name}
			ctx := context.Background()
			b.ResetTimer()
			for range b.N {
				st, err := s.Load(ctx, k)
				if err != nil {
					b.Fatal(err)
				}
				d := &core.Document{Key: k, Version: st.Version() + 1, State: &merge.Doc{Data: data}}
				if err := s.Commit(ctx, core.Commit{Key: k, ETag: st.ETag, Doc: d, IndexAdd: st.Doc == nil}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
