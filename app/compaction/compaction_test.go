package compaction_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/open-autoglm/autoglm/app/clock"
	"github.com/open-autoglm/autoglm/app/compaction"
	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/engine"
	"github.com/open-autoglm/autoglm/app/inmem"
	"github.com/open-autoglm/autoglm/app/internal/testutil"
	"github.com/open-autoglm/autoglm/app/merge"
)

const window = 5

var epoch = time.UnixMilli(1_700_000_000_000)

func newEngine(s *inmem.Store) *engine.Engine {
	return engine.New(engine.Options{
		Store: s, Clock: clock.New("n1", func() time.Time { return epoch }, time.Minute),
		LogWindow: window, Retries: 5,
	})
}

func write(t testing.TB, e *engine.Engine, k core.Key, client string, op uint64, v int) engine.Result {
	t.Helper()
	b, _ := json.Marshal(v)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := e.Do(ctx, k, core.Op{ClientID: client, OpID: op, Ops: []merge.FieldOp{
		{Op: merge.KindSet, Path: "last", Value: b}, {Op: merge.KindInc, Path: "n", Value: json.RawMessage("1")}}})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func load(t testing.TB, s *inmem.Store, k core.Key) *core.Document {
	t.Helper()
	st, err := s.Load(context.Background(), k)
	if err != nil || st.Doc == nil {
		t.Fatalf("load %s: %+v %v", k, st, err)
	}
	return st.Doc
}

// seeded writes 20 versions: client a the first 3, b the next 15, c the
// last 2.
func seeded(t testing.TB) (*inmem.Store, *engine.Engine, core.Key) {
	s := inmem.NewStore()
	e := newEngine(s)
	k := core.Key{Collection: "forms", ID: "f1"}
	for i := range 20 {
		c := "b"
		switch {
		case i < 3:
			c = "a"
		case i >= 18:
			c = "c"
		}
		write(t, e, k, c, uint64(i+1), i)
	}
	return s, e, k
}

func job(s *inmem.Store, now time.Time, mod func(*compaction.Options)) *compaction.Job {
	opt := compaction.Options{
		Store: s, Window: window, Quiet: time.Minute, Declared: []string{"forms"},
		Now: func() time.Time { return now },
	}
	if mod != nil {
		mod(&opt)
	}
	return compaction.New(opt)
}

func TestPass(t *testing.T) {
	t.Run("QuietDocument", func(t *testing.T) {
		s, e, k := seeded(t)
		before := load(t, s, k)
		if n := len(before.Idem); n != 3 {
			t.Fatalf("%d idempotency records before compaction, want 3", n)
		}
		// Every client wrote at epoch: an hour later they are idle past a
		// 30-minute age.
		st, err := job(s, epoch.Add(time.Hour), func(o *compaction.Options) { o.ClientAge = 30 * time.Minute }).Pass(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		after := load(t, s, k)
		if after.Version != 20 || !cmp.Equal(before.State, after.State) {
			t.Fatalf("data or version changed: v%d %v", after.Version, after.Data())
		}
		if after.LogStart != 16 || len(after.Tail) != 0 {
			t.Fatalf("log start %d, tail %v; want 16 and an archived tail", after.LogStart, after.Tail)
		}
		if len(after.Idem) != 0 || len(after.Gone) != 3 {
			t.Fatalf("idempotency records of idle clients kept: %v (gone %v)", after.Idem, after.Gone)
		}
		if s.LogLen(k) != 5 {
			t.Fatalf("%d op-log entries, want the 5 of the window", s.LogLen(k))
		}
		cs, err := s.Changes(context.Background(), k, 16, 20)
		if err != nil || len(cs) != 5 || cs[4].Version != 20 {
			t.Fatalf("window from the log keys alone: %v %v", cs, err)
		}
		want := compaction.Stats{Collections: 1, Documents: 1, Compacted: 1, Archived: 1, Trimmed: 1, Pruned: 3}
		st.Duration = 0
		if d := cmp.Diff(want, st); d != "" {
			t.Fatalf("stats (-want +got):\n%s", d)
		}
		// Writes go on from the compacted document.
		if r := write(t, e, k, "c", 21, 99); r.Version != 21 {
			t.Fatalf("next write at %d", r.Version)
		}
		if cs, _ := s.Changes(context.Background(), k, 17, 21); len(cs) != 5 {
			t.Fatalf("log after the next write: %v", cs)
		}
		// The engine trims from the version it read, so the log holds one
		// entry too many after that write; the next pass trims it (keeping
		// the now busy document's tail), and the one after finds nothing.
		busy := job(s, epoch.Add(time.Hour), func(o *compaction.Options) { o.Quiet = 24 * time.Hour })
		if st, _ = busy.Pass(context.Background()); st.Compacted != 1 || st.Trimmed != 1 || st.Archived != 0 {
			t.Fatalf("second pass: %+v", st)
		}
		if st, _ = busy.Pass(context.Background()); st.Compacted != 0 {
			t.Fatalf("third pass rewrote %d documents", st.Compacted)
		}
	})

	t.Run("RetryHorizonIsClientAge", func(t *testing.T) {
		s, e, k := seeded(t)
		// Trimming the log does not forget a client that wrote recently:
		// a's op 3 (version 3, long out of the log window) is still a
		// duplicate of version 3.
		if _, err := job(s, epoch.Add(time.Hour), nil).Pass(context.Background()); err != nil {
			t.Fatal(err)
		}
		if r := write(t, e, k, "a", 3, 2); !r.Dup || r.Version != 3 {
			t.Fatalf("retry within the client age: %+v", r)
		}
		// Pruning an idle client keeps its floor on the gone list: its op 3
		// is no longer answered with its version, and never applied again.
		if _, err := job(s, epoch.Add(time.Hour), func(o *compaction.Options) { o.ClientAge = 30 * time.Minute }).Pass(context.Background()); err != nil {
			t.Fatal(err)
		}
		if d := load(t, s, k); len(d.Idem) != 0 || len(d.Gone) != 3 {
			t.Fatalf("after pruning: records %v, gone %v; want the 3 clients on the gone list", d.Idem, d.Gone)
		}
		for _, id := range []uint64{1, 3} {
			r, _ := e.Do(context.Background(), k, core.Op{ClientID: "a", OpID: id, Ops: []merge.FieldOp{{Op: merge.KindInc, Path: "n", Value: json.RawMessage("1")}}})
			if core.CodeOf(r.Err) != core.CodeOpExpired || r.Dup {
				t.Fatalf("retry of a/%d after pruning: %+v (err %v), want op_expired", id, r, r.Err)
			}
		}
		// The client's next op is applied, and it is known again.
		if r := write(t, e, k, "a", 4, 2); r.Dup || r.Version != 21 {
			t.Fatalf("a/4 after pruning: %+v", r)
		}
		if d := load(t, s, k); d.Data()["n"] != 21.0 || len(d.Gone) != 2 || d.Idem["a"] == nil || d.Idem["a"].Floor != 3 {
			t.Fatalf("after a/4: n=%v, gone %v, a's record %+v", d.Data()["n"], d.Gone, d.Idem["a"])
		}
	})

	t.Run("BusyDocumentKeepsTail", func(t *testing.T) {
		s, _, k := seeded(t)
		if _, err := job(s, epoch.Add(time.Second), nil).Pass(context.Background()); err != nil {
			t.Fatal(err)
		}
		d := load(t, s, k)
		if len(d.Tail) != 1 || d.LogStart != 16 {
			t.Fatalf("busy document: tail %v, log start %d; want the tail kept and the log trimmed", d.Tail, d.LogStart)
		}
	})

	t.Run("ConflictSkips", func(t *testing.T) {
		s, e, k := seeded(t)
		raced := false
		s.BeforeCommit = func(c core.Commit) {
			if len(c.Changes) == 0 && !raced { // the job's commit: a writer wins first
				raced = true
				s.BeforeCommit = nil
				write(t, e, k, "d", 1, 7)
			}
		}
		st, err := job(s, epoch.Add(time.Hour), nil).Pass(context.Background())
		if err != nil || st.Conflicts != 1 || st.Compacted != 0 {
			t.Fatalf("pass: %+v %v", st, err)
		}
		d := load(t, s, k)
		if d.Version != 21 || d.Data()["last"] != 7.0 || len(d.Tail) != 1 {
			t.Fatalf("the writer's commit was disturbed: v%d %v tail %v", d.Version, d.Data(), d.Tail)
		}
	})

	t.Run("TextTombstones", func(t *testing.T) {
		s := inmem.NewStore()
		e := newEngine(s)
		k := core.Key{Collection: "forms", ID: "t1"}
		edit := func(op uint64, kind merge.Kind, v string) {
			t.Helper()
			if _, err := e.Do(context.Background(), k, core.Op{ClientID: "a", OpID: op, Base: int64(op - 1),
				Ops: []merge.FieldOp{{Op: kind, Path: "notes", Value: json.RawMessage(v)}}}); err != nil {
				t.Fatal(err)
			}
		}
		edit(1, merge.KindIns, `[0,"hello world"]`)
		edit(2, merge.KindDel, `[5,6]`) // " world" deleted at version 2
		for i := range 3 {
			edit(uint64(3+i), merge.KindIns, `[5,"!"]`)
		}
		j := job(s, epoch.Add(time.Hour), nil)
		// Version 5, window 5: the delete is still inside the window.
		if st, _ := j.Pass(context.Background()); st.Collected != 0 {
			t.Fatalf("collected inside the window: %+v", st)
		}
		for i := range 3 {
			edit(uint64(6+i), merge.KindIns, `[0,">"]`)
		}
		before := load(t, s, k)
		st, err := j.Pass(context.Background())
		if err != nil || st.Collected != 6 {
			t.Fatalf("pass: %+v %v", st, err)
		}
		after := load(t, s, k)
		if after.Version != before.Version || after.Data()["notes"] != ">>>hello!!!" || after.Data()["notes"] != before.Data()["notes"] {
			t.Fatalf("text changed: %v -> %v", before.Data()["notes"], after.Data()["notes"])
		}
		b1, _ := json.Marshal(before.State)
		b2, _ := json.Marshal(after.State)
		if len(b2) >= len(b1) || after.State.TextDel != nil {
			t.Fatalf("stored state %d -> %d bytes, textdel %v", len(b1), len(b2), after.State.TextDel)
		}
		// Editing goes on from the collected text.
		edit(9, merge.KindIns, `[11,"?"]`)
		if d := load(t, s, k); d.Data()["notes"] != ">>>hello!!!?" {
			t.Fatalf("after collect: %q", d.Data()["notes"])
		}
	})

	t.Run("ObservedCollections", func(t *testing.T) {
		s := inmem.NewStore()
		e := newEngine(s)
		k := core.Key{Collection: "notes", ID: "n1"}
		for i := range 8 {
			write(t, e, k, "a", uint64(i+1), i)
		}
		j := job(s, epoch.Add(time.Hour), nil) // declares only forms
		if st, _ := j.Pass(context.Background()); st.Compacted != 0 {
			t.Fatalf("compacted an unknown collection: %+v", st)
		}
		j.Observe([]core.Change{{Doc: "notes/n1", Version: 8}})
		if st, _ := j.Pass(context.Background()); st.Compacted != 1 || st.Collections != 2 {
			t.Fatalf("observed collection not walked: %+v", st)
		}
	})
}

// partitioned is a replica's view of the lock: while down, its calls fail
// as if the lock store were unreachable from it.
type partitioned struct {
	*inmem.State
	down atomic.Bool
}

func (p *partitioned) TryLock(ctx context.Context, resource, owner string, ttl time.Duration) (bool, error) {
	if p.down.Load() {
		return false, core.ErrUnavailable
	}
	return p.State.TryLock(ctx, resource, owner, ttl)
}

func (p *partitioned) Unlock(ctx context.Context, resource, owner string) (bool, error) {
	if p.down.Load() {
		return false, core.ErrUnavailable
	}
	return p.State.Unlock(ctx, resource, owner)
}

// TestLease: one of two jobs holds the lease and runs the passes; when it
// stops reaching the lock (as if its replica died) the other takes over
// within the lease time plus one poll, and a job that shuts down hands the
// lease over at once.
func TestLease(t *testing.T) {
	s, _, _ := seeded(t)
	l := inmem.NewState()
	views := map[string]*partitioned{"a": {State: l}, "b": {State: l}}
	const lease = time.Second
	var mu sync.Mutex
	passes := map[string]int{}
	mk := func(name string) (*compaction.Job, context.CancelFunc) {
		j := compaction.New(compaction.Options{
			Store: s, Lock: views[name], LockStore: "lock", Resource: "compaction:test", Owner: name,
			Interval: 50 * time.Millisecond, Lease: lease, Window: window, Declared: []string{"forms"},
			OnPass: func(compaction.Stats) { mu.Lock(); passes[name]++; mu.Unlock() },
		})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { j.Run(ctx); close(done) }()
		return j, func() { cancel(); <-done }
	}
	a, stopA := mk("a")
	defer stopA()
	testutil.Eventually(t, 2*time.Second, "a holds the lease", a.Holding)
	b, stopB := mk("b")
	defer stopB()
	testutil.Eventually(t, 2*time.Second, "a runs passes", func() bool { mu.Lock(); defer mu.Unlock(); return passes["a"] >= 3 })
	mu.Lock()
	bPasses := passes["b"]
	mu.Unlock()
	if b.Holding() || bPasses != 0 {
		t.Fatal("both hold the lease")
	}
	// Renewals keep the lease for longer than the lease time.
	time.Sleep(2 * lease) // time passes on purpose: unrenewed, the lease would have run out
	if !a.Holding() || l.Holder("compaction:test") != a.Owner() {
		t.Fatalf("lease not renewed: holder %q", l.Holder("compaction:test"))
	}

	views["a"].down.Store(true)
	took := testutil.Eventually(t, lease+lease/5+time.Second, "b takes over", b.Holding)
	t.Logf("takeover %v after the holder stopped renewing (lease %v)", took.Round(time.Millisecond), lease)
	testutil.Eventually(t, 2*time.Second, "a notices it lost the lease", func() bool { return !a.Holding() })

	stopB()
	views["a"].down.Store(false)
	took = testutil.Eventually(t, 2*time.Second, "a takes over after b shut down", a.Holding)
	if took > lease {
		t.Fatalf("a released lease was only taken after %v", took)
	}
}

func TestRegistry(t *testing.T) {
	r := compaction.NewRegistry(inmem.NewState(), "changes")
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := r.Add(context.Background(), []string{fmt.Sprintf("c%d", i%4), "shared", "Bad Name"}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	got, err := r.Load(context.Background())
	if d := cmp.Diff([]string{"c0", "c1", "c2", "c3", "shared"}, got); d != "" || err != nil {
		t.Fatalf("registry (-want +got):\n%s %v", d, err)
	}
}
