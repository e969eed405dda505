package live_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/inmem"
	"github.com/open-autoglm/autoglm/app/merge"
	"github.com/open-autoglm/autoglm/app/query"
	"github.com/open-autoglm/autoglm/app/query/live"
)

// indexed returns a live engine whose "items" index holds n documents
// {status, rank, owner}, created through its change stream.
func indexed(b *testing.B, n int) *live.Engine {
	b.Helper()
	e := live.New(inmem.NewStore())
	b.Cleanup(e.Close)
	if _, _, err := e.Query(context.Background(), "items", query.Query{Limit: 1}, nil); err != nil {
		b.Fatal(err)
	}
	cs := make([]core.Change, n)
	for i := range cs {
		cs[i] = core.Change{Doc: fmt.Sprintf("items/d%06d", i), Version: 1, Created: true, Ops: []merge.FieldOp{
			{Op: merge.KindSet, Path: "status", Value: json.RawMessage(fmt.Sprintf(`"s%d"`, i%10))},
			{Op: merge.KindSet, Path: "rank", Value: json.RawMessage(fmt.Sprint(i % 1000))},
			{Op: merge.KindSet, Path: "owner", Value: json.RawMessage(fmt.Sprintf(`"u%d"`, i%500))},
		}}
	}
	e.Observe(cs)
	e.Flush()
	return e
}

// BenchmarkQueryLimit50 is an initial query (limit 50, ordered) over an
// index of 100,000 documents.
func BenchmarkQueryLimit50(b *testing.B) {
	e := indexed(b, 100_000)
	q, err := query.Parse([]byte(`{"where":[["status","==","s3"]],"order_by":[["rank","desc"]],"limit":50}`))
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	took := make([]time.Duration, 0, b.N)
	for range b.N {
		start := time.Now()
		docs, _, err := e.Query(context.Background(), "items", q, nil)
		took = append(took, time.Since(start))
		if err != nil || len(docs) != 50 {
			b.Fatal(err, len(docs))
		}
	}
	reportPercentiles(b, took)
}

// reportPercentiles reports the p50 and p99 of took, in µs.
func reportPercentiles(b *testing.B, took []time.Duration) {
	slices.Sort(took)
	b.ReportMetric(float64(took[len(took)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(took[len(took)*99/100].Microseconds()), "p99-µs")
}

// BenchmarkAddedRemovedLatency is the time from a write's call to the
// added (or removed) event of a live query on the replica, through the
// write engine, the hub and the live engine, with 1,000 other live queries
// on the collection.
func BenchmarkAddedRemovedLatency(b *testing.B) {
	rg := newRig(b)
	for i := range 1000 {
		q, _ := query.Parse([]byte(fmt.Sprintf(`{"where":[["owner","==","u%d"]],"order_by":[["rank","asc"]],"limit":20}`, i)))
		s, _, err := rg.live.Subscribe(context.Background(), "items", q, nil, func(*live.Sub, []live.Event) {})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(s.Close)
	}
	q, _ := query.Parse([]byte(`{"where":[["status","==","open"]]}`))
	events := make(chan live.Kind, 16)
	s, _, err := rg.live.Subscribe(context.Background(), "items", q, nil, func(_ *live.Sub, evs []live.Event) {
		for _, ev := range evs {
			events <- ev.Kind
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	took := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		status, want := "open", live.Added
		if i%2 == 1 {
			status, want = "closed", live.Removed
		}
		start := time.Now()
		rg.write(b, "x", setAll(map[string]any{"status": status, "owner": "u1", "rank": i}))
		if k := <-events; k != want {
			b.Fatalf("event %v, want %v", k, want)
		}
		took = append(took, time.Since(start))
	}
	reportPercentiles(b, took)
}

// BenchmarkChangeAgainst1000Queries is the matching cost of one change
// against 1,000 live queries on its collection (10,000 documents): each
// query is an owner's open items by rank, limit 20.
func BenchmarkChangeAgainst1000Queries(b *testing.B) {
	const docs = 10_000
	e := indexed(b, docs)
	for i := range 1000 {
		q, err := query.Parse([]byte(fmt.Sprintf(`{"where":[["owner","==","u%d"],["status","!=","s9"]],"order_by":[["rank","asc"]],"limit":20}`, i%500)))
		if err != nil {
			b.Fatal(err)
		}
		s, _, err := e.Subscribe(context.Background(), "items", q, nil, func(*live.Sub, []live.Event) {})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(s.Close)
	}
	r := rand.New(rand.NewPCG(1, 1))
	versions := make([]int64, docs)
	for i := range versions {
		versions[i] = 1
	}
	cs := make([]core.Change, b.N)
	for i := range cs {
		d := r.IntN(docs)
		versions[d]++
		cs[i] = core.Change{Doc: fmt.Sprintf("items/d%06d", d), Version: versions[d], Ops: []merge.FieldOp{
			{Op: merge.KindSet, Path: "rank", Value: json.RawMessage(fmt.Sprint(r.IntN(1000)))},
			{Op: merge.KindSet, Path: "status", Value: json.RawMessage(fmt.Sprintf(`"s%d"`, r.IntN(10)))},
		}}
	}
	b.ResetTimer()
	for i := range cs {
		e.Observe(cs[i : i+1])
	}
	e.Flush()
}
