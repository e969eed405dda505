package live_test

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/open-autoglm/autoglm/app/collections"
	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/engine"
	"github.com/open-autoglm/autoglm/app/inmem"
	"github.com/open-autoglm/autoglm/app/internal/stacktest"
	"github.com/open-autoglm/autoglm/app/internal/testutil"
	"github.com/open-autoglm/autoglm/app/merge"
	"github.com/open-autoglm/autoglm/app/query"
	"github.com/open-autoglm/autoglm/app/query/live"
	"github.com/open-autoglm/autoglm/app/query/querytest"
)

type rig struct {
	store *inmem.Store
	eng   *engine.Engine
	live  *live.Engine
}

// newRig runs the write engine over the memory store, its commits
// published through a hub whose change observer feeds the live engine.
func newRig(t testing.TB) *rig {
	t.Helper()
	st := stacktest.New(stacktest.Options{Engine: engine.Options{Collections: collections.Default(), LogWindow: 100}})
	l := live.New(st.Store)
	st.Hub.Observe("live-queries", l.Observe)
	t.Cleanup(l.Close)
	return &rig{store: st.Store, eng: st.Eng, live: l}
}

func (r *rig) write(t testing.TB, id string, op core.Op) {
	t.Helper()
	op.NoBase = true
	if _, err := r.eng.Do(context.Background(), core.Key{Collection: "items", ID: id}, op); err != nil {
		t.Fatalf("write %s: %v", id, err)
	}
}

func setAll(data map[string]any) core.Op {
	var op core.Op
	for _, k := range slices.Sorted(maps.Keys(data)) {
		b, _ := json.Marshal(data[k])
		op.Ops = append(op.Ops, merge.FieldOp{Op: merge.KindSet, Path: k, Value: b})
	}
	op.Replace = true
	return op
}

// client is what a subscriber holds after applying the events it got.
type client struct {
	mu    sync.Mutex
	docs  map[string]*live.Doc
	queue [][]live.Event // received, not applied yet
	err   error
}

func newClient(initial []*live.Doc) *client {
	c := &client{docs: map[string]*live.Doc{}}
	for _, d := range initial {
		c.docs[d.ID] = d
	}
	return c
}

func (c *client) sink(_ *live.Sub, evs []live.Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.queue = append(c.queue, evs)
}

// apply applies the events received so far. Held: c.mu.
func (c *client) apply() {
	for _, evs := range c.queue {
		c.applyOne(evs)
	}
	c.queue = nil
}

func (c *client) applyOne(evs []live.Event) {
	for _, ev := range evs {
		id := ev.Doc.ID
		switch ev.Kind {
		case live.Added:
			if _, ok := c.docs[id]; ok && c.err == nil {
				c.err = fmt.Errorf("added %s already in the result", id)
			}
			c.docs[id] = ev.Doc
		case live.Changed:
			held, ok := c.docs[id]
			if !ok {
				c.err = fmt.Errorf("changed %s not in the result", id)
				continue
			}
			if ev.Delta == nil {
				c.docs[id] = ev.Doc
				continue
			}
			if ev.Delta.Version != held.Version+1 {
				c.err = fmt.Errorf("delta %s v%d on v%d", id, ev.Delta.Version, held.Version)
				continue
			}
			data := map[string]any{}
			if !ev.Delta.Created {
				b, _ := json.Marshal(held.Data)
				_ = json.Unmarshal(b, &data)
			}
			if err := merge.ApplyPlain(data, ev.Delta.Ops); err != nil {
				c.err = err
			}
			c.docs[id] = &live.Doc{ID: id, Version: ev.Delta.Version, Data: data}
		case live.Removed:
			if _, ok := c.docs[id]; !ok && c.err == nil {
				c.err = fmt.Errorf("removed %s not in the result", id)
			}
			delete(c.docs, id)
		}
	}
}

// result is the client's list in the query's order.
func (c *client) result(q query.Query) ([]string, map[string]any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.apply()
	var items []query.Item
	data := map[string]any{}
	for _, d := range c.docs {
		items = append(items, query.Item{ID: d.ID, Data: d.Data})
		data[d.ID] = d.Data
	}
	slices.SortFunc(items, q.Compare)
	ids := make([]string, len(items))
	for i, it := range items {
		ids[i] = it.ID
	}
	return ids, data
}

// truth runs q over the store's documents now.
func (r *rig) truth(t *testing.T, q query.Query, admit live.Admit) ([]string, map[string]any) {
	t.Helper()
	page, err := r.store.List(context.Background(), "items", "", 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	docs, err := r.store.Documents(context.Background(), "items", page.IDs)
	if err != nil {
		t.Fatal(err)
	}
	var items []query.Item
	for _, d := range docs {
		if d.Exists() && admit(d.Data()) {
			items = append(items, query.Item{ID: d.Key.ID, Data: d.Data()})
		}
	}
	got, _ := q.Run(items)
	ids := make([]string, len(got))
	data := map[string]any{}
	for i, it := range got {
		ids[i] = it.ID
		b, _ := json.Marshal(it.Data)
		var m map[string]any
		_ = json.Unmarshal(b, &m)
		data[it.ID] = m
	}
	return ids, data
}

// Random documents, queries and change sequences: after applying every
// event, each subscriber's result list (ids, order and data) equals the
// query run on the store's documents at that moment.
func TestLiveQueryProperty(t *testing.T) {
	for seed := range uint64(150) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			r := rand.New(rand.NewPCG(seed, 7))
			rg := newRig(t)
			ids := make([]string, 12)
			for i := range ids {
				ids[i] = fmt.Sprintf("d%02d", i)
			}
			// Some documents exist before the index loads.
			for _, id := range ids[:r.IntN(len(ids))] {
				rg.write(t, id, setAll(querytest.RandomData(r)))
			}
			// A read rule: documents whose "s" is "q" are hidden.
			admit := func(data map[string]any) bool { return data["s"] != "q" }
			type sub struct {
				q query.Query
				c *client
			}
			var subs []sub
			for range 4 {
				q := querytest.RandomQuery(r)
				c := &client{}
				var initial []*live.Doc
				s, initial, err := rg.live.Subscribe(context.Background(), "items", q, admit, c.sink)
				if err != nil {
					t.Fatal(err)
				}
				defer s.Close()
				c.mu.Lock()
				c.docs = newClient(initial).docs
				c.mu.Unlock()
				subs = append(subs, sub{q, c})
			}
			for step := range 60 {
				id := ids[r.IntN(len(ids))]
				switch r.IntN(6) {
				case 0:
					if st, _ := rg.store.Load(context.Background(), core.Key{Collection: "items", ID: id}); st.Doc.Exists() {
						rg.write(t, id, core.Op{Delete: true})
					}
				case 1, 2:
					rg.write(t, id, setAll(querytest.RandomData(r)))
				default:
					data := querytest.RandomData(r)
					var op core.Op
					for _, f := range []string{"a", "b", "s"} {
						if v, ok := data[f]; ok && r.IntN(2) == 0 {
							b, _ := json.Marshal(v)
							op.Ops = append(op.Ops, merge.FieldOp{Op: merge.KindSet, Path: f, Value: b})
						}
					}
					if len(op.Ops) == 0 {
						op.Ops = []merge.FieldOp{{Op: merge.KindUnset, Path: "a"}}
					}
					rg.write(t, id, op)
				}
				if step%10 != 9 {
					continue
				}
				for i, s := range subs {
					// Commits reach the index after their writers' acks:
					// poll, within a deadline, for the result to settle.
					var gotIDs, wantIDs []string
					var gotData, wantData map[string]any
					if !testutil.Within(5*time.Second, func() bool {
						rg.live.Flush()
						gotIDs, gotData = s.c.result(s.q)
						wantIDs, wantData = rg.truth(t, s.q, admit)
						if s.c.err != nil {
							t.Fatalf("step %d query %d: %v", step, i, s.c.err)
						}
						return slices.Equal(gotIDs, wantIDs) && reflect.DeepEqual(gotData, wantData)
					}) {
						b, _ := json.Marshal(s.q)
						t.Fatalf("step %d query %d %s:\n got %v %v\nwant %v %v", step, i, b, gotIDs, gotData, wantIDs, wantData)
					}
				}
			}
		})
	}
}
