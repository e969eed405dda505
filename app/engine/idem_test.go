package engine_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/engine"
	"github.com/open-autoglm/autoglm/app/merge"
)

func incOp(client string, id uint64) core.Op {
	return core.Op{ClientID: client, OpID: id, Ops: []merge.FieldOp{inc("n", 1), set("last", id)}}
}

// loseEveryRace makes every commit of the next write lose its ETag race to
// another writer, as on a hot document with writers on other replicas.
func loseEveryRace(f *fixture) (stop func()) {
	inner := false
	f.store.BeforeCommit = func(core.Commit) {
		if inner {
			return
		}
		inner = true
		s, _ := f.store.Load(context.Background(), key)
		_ = f.store.Commit(context.Background(), core.Commit{Key: key, ETag: s.ETag, Doc: s.Doc})
		inner = false
	}
	return func() { f.store.BeforeCommit = nil }
}

// logged returns how often each op id of client appears in the op log.
func (f *fixture) logged(t testing.TB, client string) map[uint64]int {
	t.Helper()
	v, _ := f.data(t)
	cs, err := f.store.Changes(context.Background(), key, 1, v)
	if err != nil || int64(len(cs)) != v {
		t.Fatalf("log 1..%d: %d changes, %v", v, len(cs), err)
	}
	out := map[uint64]int{}
	for _, c := range cs {
		if c.Author == client {
			out[c.OpID]++
		}
	}
	return out
}

// The audit's case: an op refused unavailable (its batch lost every ETag
// race), then a later op of the same client applied, then the retry of the
// first op. The retry must be stored, not answered as a duplicate of the
// later op.
func TestRetryOfRefusedOpAfterLaterOp(t *testing.T) {
	for _, tc := range []struct {
		name string
		fail func(f *fixture) func()
	}{
		{"LostEveryRace", loseEveryRace},
		{"StoreDown", func(f *fixture) func() {
			f.store.Fail = fmt.Errorf("dial sidecar: %w", core.ErrUnavailable)
			return func() { f.store.Fail = nil }
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, func(o *engine.Options) { o.Retries = 2; o.LogWindow = 100 })
			restore := tc.fail(f)
			a := f.do(t, incOp("c", 1))
			restore()
			if core.CodeOf(a.Err) != core.CodeUnavailable {
				t.Fatalf("op 1: %+v, want unavailable", a)
			}
			if b := f.do(t, incOp("c", 2)); b.Err != nil || b.Version != 1 || b.Dup {
				t.Fatalf("op 2: %+v", b)
			}
			retry := f.do(t, incOp("c", 1))
			if retry.Err != nil || retry.Dup || retry.Version != 2 {
				t.Fatalf("retry of op 1 answered %+v, want it stored as version 2", retry)
			}
			if v, d := f.data(t); v != 2 || d["n"] != 2.0 {
				t.Fatalf("version %d data %v", v, d)
			}
			if got := f.logged(t, "c"); got[1] != 1 || got[2] != 1 {
				t.Fatalf("op ids in the log: %v", got)
			}
		})
	}
}

// Pipelined ops arrive in any order; each id that was never applied is
// applied, and each retry is answered with its own original version.
func TestOpsOutOfOrder(t *testing.T) {
	f := newFixture(t, func(o *engine.Options) { o.LogWindow = 100 })
	order := []uint64{5, 3, 9, 1, 4, 2}
	want := map[uint64]int64{}
	for i, id := range order {
		r := f.do(t, incOp("c", id))
		if r.Err != nil || r.Dup || r.Version != int64(2*i+1) {
			t.Fatalf("op %d: %+v, want applied as version %d", id, r, 2*i+1)
		}
		want[id] = r.Version
		f.do(t, core.Op{ClientID: "other", OpID: uint64(i + 1), Ops: []merge.FieldOp{inc("m", 1)}})
	}
	for id, v := range want {
		if r := f.do(t, incOp("c", id)); r.Err != nil || !r.Dup || r.Version != v {
			t.Fatalf("retry of op %d: %+v, want dup of version %d", id, r, v)
		}
	}
	if _, d := f.data(t); d["n"] != float64(len(order)) {
		t.Fatalf("n = %v, want %d", d["n"], len(order))
	}
}

// A duplicate is answered with its original version, even far behind the
// client's latest op and outside the op log.
func TestDuplicateGetsOriginalVersion(t *testing.T) {
	f := newFixture(t, nil) // LogWindow 10
	first := f.do(t, incOp("c", 1))
	for i := uint64(2); i <= 25; i++ {
		f.do(t, incOp("c", i))
		f.do(t, core.Op{ClientID: "other", OpID: i, Ops: []merge.FieldOp{inc("m", 1)}})
	}
	r := f.do(t, incOp("c", 1))
	if r.Err != nil || !r.Dup || r.Version != first.Version {
		t.Fatalf("retry of op 1: %+v, want dup of version %d", r, first.Version)
	}
	if v, _ := f.data(t); v != 49 {
		t.Fatalf("version %d after a duplicate, want 49", v)
	}
}

func TestReusedOpIDRefused(t *testing.T) {
	f := newFixture(t, nil)
	f.do(t, core.Op{ClientID: "c", OpID: 1, Ops: []merge.FieldOp{set("a", 1)}})
	f.do(t, core.Op{ClientID: "c", OpID: 2, Ops: []merge.FieldOp{set("b", 1)}})
	for _, op := range []core.Op{
		{ClientID: "c", OpID: 1, Ops: []merge.FieldOp{set("a", 2)}},                // other value
		{ClientID: "c", OpID: 1, Ops: []merge.FieldOp{set("z", 1)}},                // other path
		{ClientID: "c", OpID: 1, Ops: []merge.FieldOp{set("a", 1)}, Base: 1},       // other base
		{ClientID: "c", OpID: 2, Delete: true},                                     // a delete
		{ClientID: "c", OpID: 2, Ops: []merge.FieldOp{set("b", 1)}, Replace: true}, // a PUT
	} {
		r := f.do(t, op)
		if code := core.CodeOf(r.Err); code != core.CodeOpIDReused || code.Retryable() || r.Dup {
			t.Fatalf("%+v answered %+v, want op_id_reused (not retryable)", op, r)
		}
	}
	if v, d := f.data(t); v != 2 || d["a"] != 1.0 || d["z"] != nil {
		t.Fatalf("a refused op changed the document: v%d %v", v, d)
	}
	// The same content spelled differently is the same op.
	same := core.Op{ClientID: "c", OpID: 1, Ops: []merge.FieldOp{{Op: merge.KindSet, Path: "a", Value: []byte(" 1.0 ")}}}
	if r := f.do(t, same); r.Err != nil || !r.Dup || r.Version != 1 {
		t.Fatalf("same content, other spelling: %+v", r)
	}
}

func TestBeyondWindowRefused(t *testing.T) {
	f := newFixture(t, func(o *engine.Options) { o.LogWindow = 1000 })
	// Op 1 is never applied; ops 2..IdemPerClient+2 are.
	last := uint64(core.IdemPerClient + 2)
	for id := uint64(2); id <= last; id++ {
		if r := f.do(t, incOp("c", id)); r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	// Op 2 left the window (the lowest ids go first): neither applied
	// again nor a duplicate. Op 1 is below the forgotten op 2, so whether
	// it was applied is not known either.
	for _, id := range []uint64{1, 2} {
		r := f.do(t, incOp("c", id))
		if code := core.CodeOf(r.Err); code != core.CodeOpExpired || code.Retryable() || r.Dup {
			t.Fatalf("op %d: %+v, want op_expired (not retryable)", id, r)
		}
	}
	// The window still answers the ops it holds, and takes new ids.
	if r := f.do(t, incOp("c", 3)); !r.Dup || r.Version != 2 {
		t.Fatalf("op 3: %+v", r)
	}
	if r := f.do(t, incOp("c", last+5)); r.Err != nil || r.Dup {
		t.Fatalf("new op: %+v", r)
	}
	if v, d := f.data(t); v != int64(last) || d["n"] != float64(last) {
		t.Fatalf("v%d %v", v, d)
	}
}

// The same op twice in one coalesced batch is applied once; both copies are
// answered with its version.
func TestDuplicateInsideBatch(t *testing.T) {
	f := newFixture(t, nil)
	entered, release := f.store.HoldNextCommit()
	results := make(chan engine.Result, 4)
	f.eng.Submit(key, incOp("x", 1), func(r engine.Result) { results <- r })
	<-entered // the first batch is in its commit: the rest queue up behind it
	for range 2 {
		f.eng.Submit(key, incOp("c", 7), func(r engine.Result) { results <- r })
	}
	f.eng.Submit(key, core.Op{ClientID: "c", OpID: 7, Ops: []merge.FieldOp{set("other", 1)}}, func(r engine.Result) { results <- r })
	for deadline := time.Now().Add(5 * time.Second); f.eng.Pending() != 3 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	release()
	var got []engine.Result
	for range 4 {
		got = append(got, <-results)
	}
	if got[0].Version != 1 || got[1].Version != 2 || got[1].Dup || !got[2].Dup || got[2].Version != 2 {
		t.Fatalf("results %+v", got)
	}
	if core.CodeOf(got[3].Err) != core.CodeOpIDReused {
		t.Fatalf("reused id in the batch: %+v", got[3])
	}
	if v, d := f.data(t); v != 2 || d["n"] != 2.0 {
		t.Fatalf("v%d %v", v, d)
	}
}

// flakyStore fails some loads and commits as a sidecar outage would: before
// the write (nothing stored) or after it (stored, but the caller hears an
// error), so a client cannot tell whether its op was applied.
type flakyStore struct {
	core.Store
	mu  sync.Mutex
	rnd *rand.Rand
}

func (s *flakyStore) roll(p float64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rnd.Float64() < p
}

func (s *flakyStore) Load(ctx context.Context, k core.Key) (core.Stored, error) {
	if s.roll(0.1) {
		return core.Stored{}, core.ErrUnavailable
	}
	return s.Store.Load(ctx, k)
}

func (s *flakyStore) Commit(ctx context.Context, c core.Commit) error {
	if s.roll(0.2) {
		return core.ErrUnavailable
	}
	if err := s.Store.Commit(ctx, c); err != nil {
		return err
	}
	if s.roll(0.2) {
		return fmt.Errorf("reply lost: %w", core.ErrUnavailable)
	}
	return nil
}

// Random interleavings of first sends, retries, duplicates and reorders of
// several clients' pipelined ops, over a store that fails before and after
// writing: every op ends up applied exactly once, and every answer for an op
// names the version that holds it.
func TestRetriesConvergeToExactlyOnce(t *testing.T) {
	for seed := range uint64(30) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rnd := rand.New(rand.NewPCG(seed, 7))
			f := newFixture(t, func(o *engine.Options) {
				o.LogWindow, o.Retries = 10000, 3
				o.Store = &flakyStore{Store: o.Store, rnd: rand.New(rand.NewPCG(seed, 11))}
			})
			clients := []string{"a", "b", "c"}
			type pending struct {
				client string
				id     uint64
			}
			var todo []pending
			for _, c := range clients {
				for i := range 12 {
					// Sparse, increasing ids, as a client writing other
					// documents between these ops has.
					todo = append(todo, pending{c, uint64(i*3 + 1 + rnd.IntN(3))})
				}
			}
			acked := map[pending]int64{}
			for steps := 0; len(acked) < len(todo); steps++ {
				if steps > 5000 {
					t.Fatalf("no convergence: %d of %d acked", len(acked), len(todo))
				}
				// A burst of sends in random order: unacked ops, and
				// duplicates of acked ones, some twice in one batch.
				var wg sync.WaitGroup
				var mu sync.Mutex
				for range 1 + rnd.IntN(6) {
					p := todo[rnd.IntN(len(todo))]
					wg.Add(1)
					f.eng.Submit(key, incOp(p.client, p.id), func(r engine.Result) {
						defer wg.Done()
						if r.Err != nil {
							if core.CodeOf(r.Err) != core.CodeUnavailable {
								t.Errorf("%v: %v", p, r.Err)
							}
							return
						}
						mu.Lock()
						defer mu.Unlock()
						if v, ok := acked[p]; ok && v != r.Version {
							t.Errorf("%v answered version %d, earlier %d", p, r.Version, v)
						}
						acked[p] = r.Version
					})
				}
				wg.Wait()
				if t.Failed() {
					return
				}
			}
			v, d := f.data(t)
			if v != int64(len(todo)) || d["n"] != float64(len(todo)) {
				t.Fatalf("version %d, n %v; want %d ops applied once each", v, d["n"], len(todo))
			}
			cs, err := f.store.Changes(context.Background(), key, 1, v)
			if err != nil || int64(len(cs)) != v {
				t.Fatalf("log: %d %v", len(cs), err)
			}
			for _, c := range cs {
				p := pending{c.Author, c.OpID}
				if acked[p] != c.Version {
					t.Fatalf("%v is version %d in the log, acked as %d", p, c.Version, acked[p])
				}
			}
		})
	}
}
