package engine_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/open-autoglm/autoglm/app/clock"
	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/engine"
	"github.com/open-autoglm/autoglm/app/internal/testutil"
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
	testutil.Eventually(t, 5*time.Second, "3 ops queued", func() bool { return f.eng.Pending() == 3 })
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
	t.Parallel() // thousands of commits each: they share the cores
	seeds := uint64(30)
	if testing.Short() {
		seeds = 8 // make test-unit; make test runs all thirty
	}
	for seed := range seeds {
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

// crowdClock makes the engine's wall clock advance a millisecond per reading,
// so "the client that wrote least recently" is the one that wrote first.
func crowdClock(o *engine.Options) {
	var ms atomic.Int64
	o.Clock = clock.New("n1", func() time.Time { return time.UnixMilli(1_700_000_000_000 + ms.Add(1)) }, time.Minute)
	o.LogWindow = 10_000
}

// retryOnce sends op again and fails the test unless it is answered with
// version want as a duplicate or refused op_expired; it reports whether it
// was a duplicate.
func retryOnce(t *testing.T, f *fixture, op core.Op, want int64) bool {
	t.Helper()
	r := f.do(t, op)
	switch {
	case r.Err == nil && r.Dup && r.Version == want:
		return true
	case r.Err != nil && core.CodeOf(r.Err) == core.CodeOpExpired && !r.Dup:
		return false
	}
	t.Fatalf("retry of %s/%d: %+v (err %v), want dup at v%d or op_expired", op.ClientID, op.OpID, r, r.Err, want)
	return false
}

// More clients than a document keeps records for write once each after
// client a's op 1; a's retry of op 1 must never be applied again.
func TestCrowdRetryNotAppliedTwice(t *testing.T) {
	t.Parallel() // thousands of commits each: they share the cores
	f := newFixture(t, crowdClock)
	if r := f.do(t, incOp("a", 1)); r.Err != nil || r.Version != 1 {
		t.Fatalf("op 1: %+v", r)
	}
	const crowd = 300
	for i := range crowd {
		if r := f.do(t, incOp(fmt.Sprint("c", i), 1)); r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	retryOnce(t, f, incOp("a", 1), 1)
	if v, d := f.data(t); v != crowd+1 || d["n"] != float64(crowd+1) {
		t.Fatalf("v%d n=%v, want %d: an op was applied twice", v, d["n"], crowd+1)
	}
	if f.logged(t, "a")[1] != 1 {
		t.Fatalf("op a/1 logged %d times", f.logged(t, "a")[1])
	}
	// A client that was dropped and writes again is answered for its new
	// ops and keeps refusing the old one.
	if r := f.do(t, incOp("a", 2)); r.Err != nil || r.Dup {
		t.Fatalf("a/2: %+v", r)
	}
	retryOnce(t, f, incOp("a", 1), 1)
}

// Past IdemClients + IdemGone clients the oldest are forgotten altogether:
// an op of a client the document no longer knows is refused op_expired when
// its base is below the horizon (it may be such a client's retry) and
// applied when it is based at or above it.
func TestCrowdHorizon(t *testing.T) {
	t.Parallel() // thousands of commits each: they share the cores
	f := newFixture(t, crowdClock)
	first := incOp("a", 1)
	if r := f.do(t, first); r.Err != nil {
		t.Fatal(r.Err)
	}
	// The crowd writes with a base (the version it read): once the horizon
	// is set, a new client needs one.
	v := int64(1)
	for i := range core.IdemClients + core.IdemGone + 20 {
		op := incOp(fmt.Sprint("c", i), 1)
		op.Base = v
		r := f.do(t, op)
		if r.Err != nil {
			t.Fatal(r.Err)
		}
		v = r.Version
	}
	r := f.do(t, first)
	if core.CodeOf(r.Err) != core.CodeOpExpired || r.Dup {
		t.Fatalf("retry of a forgotten client's op: %+v (err %v), want op_expired", r, r.Err)
	}
	// A new client without a base (or below the horizon) is refused too;
	// based at the current version it is applied.
	for _, op := range []core.Op{
		{ClientID: "new", OpID: 1, NoBase: true, Ops: []merge.FieldOp{inc("n", 1)}},
		{ClientID: "new", OpID: 1, Base: 1, Ops: []merge.FieldOp{inc("n", 1)}},
	} {
		if r := f.do(t, op); core.CodeOf(r.Err) != core.CodeOpExpired {
			t.Fatalf("unknown client, base %d: %+v (err %v), want op_expired", op.Base, r, r.Err)
		}
	}
	for _, op := range []core.Op{
		{ClientID: "new", OpID: 1, Base: v, Ops: []merge.FieldOp{inc("n", 1)}},
		{ClientID: "new2", OpID: 1, NoBase: true, IfVersion: v + 1, Ops: []merge.FieldOp{inc("n", 1)}},
	} {
		if r := f.do(t, op); r.Err != nil || r.Dup {
			t.Fatalf("unknown client based at the current version: %+v (err %v)", r, r.Err)
		}
	}
	if got, d := f.data(t); got != v+2 || d["n"] != float64(v+2) {
		t.Fatalf("v%d n=%v, want %d", got, d["n"], v+2)
	}
}

// A client that stalls with ops in flight keeps its records while many
// others write: the per-document bound takes from the clients holding the
// most records.
func TestStalledClientKeepsItsWindow(t *testing.T) {
	t.Parallel() // thousands of commits each: they share the cores
	f := newFixture(t, crowdClock)
	var stalled []core.Op
	for id := uint64(1); id <= 4; id++ {
		op := incOp("s", id)
		if r := f.do(t, op); r.Err != nil || r.Version != int64(id) {
			t.Fatalf("s/%d: %+v", id, r)
		}
		stalled = append(stalled, op)
	}
	for i := range 5000 {
		if r := f.do(t, incOp(fmt.Sprint("w", i%30), uint64(i/30+1))); r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	for i, op := range stalled {
		if r := f.do(t, op); r.Err != nil || !r.Dup || r.Version != int64(i+1) {
			t.Fatalf("retry of s/%d after 5000 writes of others: %+v (err %v), want dup at v%d", op.OpID, r, r.Err, i+1)
		}
	}
}
