package engine_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/engine"
	"github.com/open-autoglm/autoglm/app/merge"
)

// Commit observers see each commit made here once, after the local fast
// path, in the order given and in version order, with the commit's
// changes; a duplicate or a refused op is no commit and reaches none, and
// nothing is observed before the commit is durable.
func TestObserversSeeEachCommitOnce(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	record := func(name string) func(context.Context, []core.Change) {
		return func(_ context.Context, cs []core.Change) {
			mu.Lock()
			defer mu.Unlock()
			for _, c := range cs {
				seen = append(seen, fmt.Sprintf("%s v%d", name, c.Version))
			}
		}
	}
	var f *fixture
	f = newFixture(t, func(o *engine.Options) {
		o.Local = func(cs []core.Change) { record("local")(context.Background(), cs) }
		o.Observers = []engine.Observer{
			{Name: "a", Changes: func(ctx context.Context, cs []core.Change) {
				// Durable before it is observed.
				if st, err := f.store.Load(ctx, key); err != nil || st.Doc == nil || st.Doc.Version < cs[len(cs)-1].Version {
					t.Errorf("observed v%d before it was stored (%v)", cs[len(cs)-1].Version, err)
				}
				record("a")(ctx, cs)
			}},
			{Name: "b", Changes: record("b")},
		}
	})
	for id := uint64(1); id <= 3; id++ {
		if r := f.do(t, incOp("c", id)); r.Err != nil || r.Version != int64(id) {
			t.Fatalf("op %d: %+v", id, r)
		}
	}
	if r := f.do(t, incOp("c", 2)); !r.Dup {
		t.Fatalf("retry of op 2: %+v, want a duplicate", r)
	}
	refused := core.Op{ClientID: "c", OpID: 4, Ops: []merge.FieldOp{{Op: "no-such-op", Path: "n"}}}
	if r := f.do(t, refused); r.Err == nil {
		t.Fatalf("an invalid op was accepted: %+v", r)
	}
	want := []string{"local v1", "a v1", "b v1", "local v2", "a v2", "b v2", "local v3", "a v3", "b v3"}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(seen, want) {
		t.Fatalf("observed %v, want %v", seen, want)
	}
}
