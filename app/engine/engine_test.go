package engine_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/open-autoglm/autoglm/app/clock"
	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/engine"
	"github.com/open-autoglm/autoglm/app/inmem"
	"github.com/open-autoglm/autoglm/app/internal/testutil"
	"github.com/open-autoglm/autoglm/app/merge"
)

type fixture struct {
	store *inmem.Store
	bus   *inmem.Bus
	eng   *engine.Engine
	local [][]core.Change
	mu    sync.Mutex
	conf  int
}

func newFixture(t testing.TB, mod func(*engine.Options)) *fixture {
	t.Helper()
	f := &fixture{store: inmem.NewStore(), bus: &inmem.Bus{}}
	opt := engine.Options{
		Store: f.store, Bus: f.bus,
		Clock: clock.New("n1", func() time.Time { return time.UnixMilli(1_700_000_000_000) }, time.Minute),
		Local: func(cs []core.Change) {
			f.mu.Lock()
			f.local = append(f.local, cs)
			f.mu.Unlock()
		},
		LogWindow: 10,
		Retries:   5,
		Metrics:   engine.Metrics{Conflicts: func() { f.mu.Lock(); f.conf++; f.mu.Unlock() }},
	}
	if mod != nil {
		mod(&opt)
	}
	f.eng = engine.New(opt)
	return f
}

func set(path string, v any) merge.FieldOp {
	b, _ := json.Marshal(v)
	return merge.FieldOp{Op: merge.KindSet, Path: path, Value: b}
}

func inc(path string, n float64) merge.FieldOp {
	b, _ := json.Marshal(n)
	return merge.FieldOp{Op: merge.KindInc, Path: path, Value: b}
}

var key = core.Key{Collection: "forms", ID: "f1"}

func (f *fixture) do(t testing.TB, op core.Op) engine.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, _ := f.eng.Do(ctx, key, op)
	return r
}

func (f *fixture) data(t testing.TB) (int64, map[string]any) {
	t.Helper()
	s, err := f.store.Load(context.Background(), key)
	if err != nil || s.Doc == nil {
		t.Fatalf("load: %v %v", s.Doc, err)
	}
	return s.Doc.Version, s.Doc.Data()
}

func TestVersionsAreDense(t *testing.T) {
	f := newFixture(t, nil)
	for i := 1; i <= 25; i++ {
		r := f.do(t, core.Op{ClientID: "c", OpID: uint64(i), Ops: []merge.FieldOp{inc("n", 1)}})
		if r.Err != nil || r.Version != int64(i) {
			t.Fatalf("op %d: version %d err %v", i, r.Version, r.Err)
		}
		if r.Change == nil || r.Change.Prev != int64(i-1) || (i == 1) != r.Change.Created {
			t.Fatalf("op %d: change %+v", i, r.Change)
		}
	}
	v, d := f.data(t)
	if v != 25 || d["n"] != 25.0 {
		t.Fatalf("version %d data %v", v, d)
	}
	// The log keeps at least the last LogWindow versions: the newest in the
	// document's tail, the rest under the log keys; older ones are trimmed
	// (one commit behind, so a lost race never trims inside the window).
	s, _ := f.store.Load(context.Background(), key)
	if s.Doc.LogStart != 15 || len(s.Doc.Tail) != 1 {
		t.Fatalf("log start %d, tail %v; want 15 and the last change", s.Doc.LogStart, s.Doc.Tail)
	}
	if n := f.store.LogLen(key); n != 10 {
		t.Fatalf("log keys hold %d entries, want 10 (15..24)", n)
	}
	cs, _ := f.store.Changes(context.Background(), key, 15, 25)
	if len(cs) != 11 || cs[0].Version != 15 || cs[10].Version != 25 {
		t.Fatalf("log window: %d entries: %v", len(cs), cs)
	}
	if cs, _ := f.store.Changes(context.Background(), key, 14, 25); len(cs) != 0 {
		t.Fatalf("trimmed version 14 still readable: %v", cs)
	}
}

func TestIdempotentRetries(t *testing.T) {
	f := newFixture(t, nil)
	for i := 1; i <= 3; i++ {
		f.do(t, core.Op{ClientID: "c", OpID: uint64(i), Ops: []merge.FieldOp{inc("n", 1)}})
		f.do(t, core.Op{ClientID: "other", OpID: uint64(i), Ops: []merge.FieldOp{inc("m", 1)}})
	}
	t.Run("Last", func(t *testing.T) {
		r := f.do(t, core.Op{ClientID: "c", OpID: 3, Ops: []merge.FieldOp{inc("n", 1)}})
		if !r.Dup || r.Version != 5 || r.Err != nil {
			t.Fatalf("%+v", r)
		}
	})
	t.Run("Older", func(t *testing.T) {
		r := f.do(t, core.Op{ClientID: "c", OpID: 1, Ops: []merge.FieldOp{inc("n", 1)}})
		if !r.Dup || r.Version != 1 {
			t.Fatalf("older retry answered %+v, want its original version 1", r)
		}
	})
	if v, d := f.data(t); v != 6 || d["n"] != 3.0 {
		t.Fatalf("retries applied again: version %d data %v", v, d)
	}
}

func TestCoalescesQueuedOps(t *testing.T) {
	var batches []int
	var mu sync.Mutex
	f := newFixture(t, func(o *engine.Options) {
		o.Metrics.Batch = func(n int) { mu.Lock(); batches = append(batches, n); mu.Unlock() }
	})
	// Hold the first transaction while more ops queue up.
	entered, release := f.store.HoldNextCommit()
	var wg sync.WaitGroup
	results := make([]engine.Result, 51)
	for i := range 51 {
		wg.Add(1)
		f.eng.Submit(key, core.Op{ClientID: "c", OpID: uint64(i + 1), Ops: []merge.FieldOp{inc("n", 1)}}, func(r engine.Result) {
			results[i] = r
			wg.Done()
		})
		if i == 0 {
			<-entered // the first batch starts alone
		}
	}
	release()
	wg.Wait()
	for i, r := range results {
		if r.Err != nil || r.Version != int64(i+1) {
			t.Fatalf("op %d: %+v", i+1, r)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if d := cmp.Diff([]int{1, 50}, batches); d != "" {
		t.Fatalf("batches (-want +got):\n%s", d)
	}
	// Broadcasts follow the acks.
	testutil.Eventually(t, 2*time.Second, "51 changes broadcast", func() bool { return len(f.bus.Published()) >= 51 })
	if n := len(f.bus.Published()); n != 51 {
		t.Fatalf("broadcast %d changes", n)
	}
}

func TestRetriesAfterETagConflict(t *testing.T) {
	f := newFixture(t, nil)
	f.do(t, core.Op{ClientID: "c", OpID: 1, Ops: []merge.FieldOp{set("a", 1)}})
	other := newFixture(t, nil)
	other.store = f.store
	competing := 2
	f.store.BeforeCommit = func(c core.Commit) {
		if competing == 0 {
			return
		}
		competing--
		// Another replica commits between our read and our write.
		s, _ := f.store.Load(context.Background(), key)
		doc := *s.Doc
		doc.Version++
		doc.State.Data["b"] = float64(doc.Version)
		ch := core.Change{Doc: key.String(), Version: doc.Version, Prev: doc.Version - 1, Ops: []merge.FieldOp{set("b", doc.Version)}}
		bc := f.store.BeforeCommit
		f.store.BeforeCommit = nil
		if err := f.store.Commit(context.Background(), core.Commit{Key: key, ETag: s.ETag, Doc: &doc, Changes: []core.Change{ch}}); err != nil {
			t.Errorf("competing commit: %v", err)
		}
		f.store.BeforeCommit = bc
	}
	r := f.do(t, core.Op{ClientID: "c", OpID: 2, Ops: []merge.FieldOp{set("a", 2)}})
	if r.Err != nil || r.Version != 4 {
		t.Fatalf("after two lost races: %+v", r)
	}
	v, d := f.data(t)
	if v != 4 || d["a"] != 2.0 || d["b"] != 3.0 {
		t.Fatalf("version %d data %v", v, d)
	}
	if f.conf != 2 {
		t.Fatalf("conflicts counted %d, want 2", f.conf)
	}
	cs, _ := f.store.Changes(context.Background(), key, 1, 4)
	for i, c := range cs {
		if c.Version != int64(i+1) {
			t.Fatalf("log not dense: %v", cs)
		}
	}
}

func TestRetriesAreBounded(t *testing.T) {
	f := newFixture(t, func(o *engine.Options) { o.Retries = 2 })
	f.do(t, core.Op{Ops: []merge.FieldOp{set("a", 1)}})
	calls := 0
	inner := false
	f.store.BeforeCommit = func(core.Commit) {
		if inner {
			return
		}
		calls++
		// Every attempt loses the race to another writer.
		inner = true
		s, _ := f.store.Load(context.Background(), key)
		_ = f.store.Commit(context.Background(), core.Commit{Key: key, ETag: s.ETag, Doc: s.Doc})
		inner = false
	}
	r := f.do(t, core.Op{Ops: []merge.FieldOp{set("a", 2)}})
	// Losing every race is not the client's fault: it is told to retry.
	if core.CodeOf(r.Err) != core.CodeUnavailable || !core.CodeOf(r.Err).Retryable() || calls != 3 {
		t.Fatalf("got %v after %d attempts, want a retryable unavailable after 3", r.Err, calls)
	}
	if _, d := f.data(t); d["a"] != 1.0 {
		t.Fatalf("failed write changed data: %v", d)
	}
}

func TestRejections(t *testing.T) {
	f := newFixture(t, func(o *engine.Options) { o.MaxDoc = 200; o.MaxOps = 3 })
	f.do(t, core.Op{ClientID: "c", OpID: 1, Ops: []merge.FieldOp{set("name", "x")}})
	cases := []struct {
		name string
		op   core.Op
		code core.Code
	}{
		{"NoOps", core.Op{}, core.CodeInvalidOp},
		{"TooManyOps", core.Op{Ops: []merge.FieldOp{set("a", 1), set("b", 1), set("c", 1), set("d", 1)}}, core.CodeTooLarge},
		{"DocTooLarge", core.Op{Ops: []merge.FieldOp{set("big", string(make([]byte, 300)))}}, core.CodeTooLarge},
		{"IncString", core.Op{Ops: []merge.FieldOp{inc("name", 1)}}, core.CodeInvalidOp},
		{"BaseAhead", core.Op{Base: 9, Ops: []merge.FieldOp{set("a", 1)}}, core.CodeConflict},
		{"IfVersion", core.Op{IfVersion: 7, Ops: []merge.FieldOp{set("a", 1)}}, core.CodePreconditionFailed},
		{"IfAbsent", core.Op{IfVersion: -1, Ops: []merge.FieldOp{set("a", 1)}}, core.CodePreconditionFailed},
		{"FutureStamp", core.Op{HLC: clock.Timestamp{Wall: 1_700_000_000_000 + 3_600_000, Node: "c"}, Ops: []merge.FieldOp{set("a", 1)}}, core.CodeClockSkew},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := f.do(t, c.op)
			if got := core.CodeOf(r.Err); got != c.code {
				t.Fatalf("code %q (%v), want %q", got, r.Err, c.code)
			}
		})
	}
	if v, d := f.data(t); v != 1 || len(d) != 1 {
		t.Fatalf("rejections changed the document: version %d %v", v, d)
	}
}

// A rejected op in a coalesced batch does not take the others down.
func TestRejectionInsideBatch(t *testing.T) {
	f := newFixture(t, nil)
	f.do(t, core.Op{Ops: []merge.FieldOp{set("name", "x")}})
	entered, release := f.store.HoldNextCommit()
	var wg sync.WaitGroup
	res := make([]engine.Result, 4)
	ops := [][]merge.FieldOp{{set("a", 1)}, {set("b", 1)}, {inc("name", 1)}, {set("c", 1)}}
	for i, o := range ops {
		wg.Add(1)
		f.eng.Submit(key, core.Op{Ops: o}, func(r engine.Result) { res[i] = r; wg.Done() })
		if i == 0 {
			<-entered
		}
	}
	release()
	wg.Wait()
	got := []string{}
	for _, r := range res {
		got = append(got, fmt.Sprintf("%d/%s", r.Version, core.CodeOf(r.Err)))
	}
	if d := cmp.Diff([]string{"2/", "3/", "0/invalid_op", "4/"}, got); d != "" {
		t.Fatalf("(-want +got):\n%s", d)
	}
}

func TestReplaceAndDelete(t *testing.T) {
	f := newFixture(t, nil)
	f.do(t, core.Op{Ops: []merge.FieldOp{set("a", 1), set("b", 2)}})
	r := f.do(t, core.Op{Replace: true, Ops: []merge.FieldOp{set("b", 3), set("c", 4)}})
	if r.Err != nil {
		t.Fatal(r.Err)
	}
	if _, d := f.data(t); cmp.Diff(map[string]any{"b": 3.0, "c": 4.0}, d) != "" {
		t.Fatalf("replace: %v", d)
	}
	del := f.do(t, core.Op{Delete: true})
	if del.Err != nil || !del.Change.Deleted || del.Version != 3 {
		t.Fatalf("delete: %+v", del)
	}
	if again := f.do(t, core.Op{Delete: true}); core.CodeOf(again.Err) != core.CodeNotFound {
		t.Fatalf("second delete: %v", again.Err)
	}
	re := f.do(t, core.Op{Ops: []merge.FieldOp{set("z", 1)}})
	if !re.Change.Created || re.Version != 4 {
		t.Fatalf("re-create: %+v", re.Change)
	}
	if _, d := f.data(t); cmp.Diff(map[string]any{"z": 1.0}, d) != "" {
		t.Fatalf("re-created document starts empty: %v", d)
	}
}

func TestCloseFinishesQueuedWrites(t *testing.T) {
	f := newFixture(t, nil)
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok := 0
	for i := range 100 {
		wg.Add(1)
		k := core.Key{Collection: "c", ID: fmt.Sprintf("d%d", i%7)}
		f.eng.Submit(k, core.Op{Ops: []merge.FieldOp{inc("n", 1)}}, func(r engine.Result) {
			if r.Err == nil {
				mu.Lock()
				ok++
				mu.Unlock()
			}
			wg.Done()
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := f.eng.Close(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if ok != 100 {
		t.Fatalf("%d of 100 queued writes finished", ok)
	}
	r, _ := f.eng.Do(ctx, key, core.Op{Ops: []merge.FieldOp{inc("n", 1)}})
	if !errors.Is(r.Err, core.ErrShuttingDown) {
		t.Fatalf("after close: %v", r.Err)
	}
}

// stalledBus never finishes a publish until released.
type stalledBus struct {
	release chan struct{}
	mu      sync.Mutex
	got     []int64
	// Every publish: its changes and the span in its context.
	calls [][]core.Change
	spans []trace.SpanContext
}

func (b *stalledBus) Publish(ctx context.Context, cs []core.Change) error {
	select {
	case <-b.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range cs {
		b.got = append(b.got, c.Version)
	}
	b.calls = append(b.calls, slices.Clone(cs))
	b.spans = append(b.spans, trace.SpanContextFromContext(ctx))
	return nil
}

func (b *stalledBus) PublishPresence(context.Context, []core.Presence) error { return nil }

// releaseAndDrain lets the stalled broker go and waits, through Close,
// until every queued broadcast has left.
func (b *stalledBus) releaseAndDrain(t *testing.T, f *fixture) {
	t.Helper()
	close(b.release)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := f.eng.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

// eachDocument runs write for documents forms/d0 .. forms/d<n-1>, all at
// once, and returns when every one has returned.
func eachDocument(n int, write func(ctx context.Context, k core.Key)) {
	var wg sync.WaitGroup
	for d := range n {
		wg.Go(func() { write(context.Background(), core.Key{Collection: "forms", ID: fmt.Sprintf("d%d", d)}) })
	}
	wg.Wait()
}

// A stalled broker does not hold up writes, and once it recovers the
// broadcasts of one document still leave in version order.
func TestStalledBrokerDoesNotBlockWrites(t *testing.T) {
	bus := &stalledBus{release: make(chan struct{})}
	f := newFixture(t, func(o *engine.Options) { o.Bus = bus })
	start := time.Now()
	for i := 1; i <= 20; i++ {
		if r := f.do(t, core.Op{Ops: []merge.FieldOp{inc("n", 1)}}); r.Err != nil || r.Version != int64(i) {
			t.Fatalf("write %d while the broker stalls: %+v", i, r)
		}
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("20 writes took %v behind a stalled broker", d)
	}
	bus.releaseAndDrain(t, f)
	bus.mu.Lock()
	defer bus.mu.Unlock()
	want := make([]int64, 20)
	for i := range want {
		want[i] = int64(i + 1)
	}
	if d := cmp.Diff(want, bus.got); d != "" {
		t.Fatalf("broadcast order (-want +got):\n%s", d)
	}
}

// Commits of many documents made while a broadcast is in flight leave
// together in the next message: fewer messages than commits, each change
// exactly once, and every document's changes in version order.
func TestBroadcastsOfManyDocumentsShareMessages(t *testing.T) {
	bus := &stalledBus{release: make(chan struct{})}
	f := newFixture(t, func(o *engine.Options) { o.Bus = bus })
	const docs, writes = 10, 5
	// Every write is durable while the first broadcast stalls.
	eachDocument(docs, func(ctx context.Context, k core.Key) {
		for i := 1; i <= writes; i++ {
			r, err := f.eng.Do(ctx, k, core.Op{Ops: []merge.FieldOp{inc("n", 1)}})
			if err != nil || r.Version != int64(i) {
				t.Errorf("%s write %d: %+v %v", k, i, r, err)
			}
		}
	})
	bus.releaseAndDrain(t, f)
	bus.mu.Lock()
	defer bus.mu.Unlock()
	if len(bus.calls) >= docs*writes/2 {
		t.Errorf("%d commits took %d messages; commits made during a publish should share them", docs*writes, len(bus.calls))
	}
	next := map[string]int64{}
	for _, call := range bus.calls {
		for _, c := range call {
			if c.Version != next[c.Doc]+1 {
				t.Fatalf("%s: version %d after %d", c.Doc, c.Version, next[c.Doc])
			}
			next[c.Doc] = c.Version
		}
	}
	if len(next) != docs {
		t.Fatalf("%d documents broadcast, want %d", len(next), docs)
	}
	for doc, v := range next {
		if v != writes {
			t.Errorf("%s broadcast up to version %d, want %d", doc, v, writes)
		}
	}
}

// A message never carries commits of two traces: each receipt is the
// child of the commit span it carries.
func TestBroadcastMessagesKeepOneTrace(t *testing.T) {
	bus := &stalledBus{release: make(chan struct{})}
	tp := sdktrace.NewTracerProvider()
	f := newFixture(t, func(o *engine.Options) { o.Bus = bus; o.Tracer = tp.Tracer("test") })
	const docs = 6
	eachDocument(docs, func(ctx context.Context, k core.Key) {
		ctx, span := tp.Tracer("test").Start(ctx, "op")
		defer span.End()
		if _, err := f.eng.Do(ctx, k, core.Op{Ops: []merge.FieldOp{inc("n", 1)}}); err != nil {
			t.Error(err)
		}
	})
	bus.releaseAndDrain(t, f)
	bus.mu.Lock()
	defer bus.mu.Unlock()
	if len(bus.calls) != docs {
		t.Fatalf("%d traced commits in %d messages, want one each", docs, len(bus.calls))
	}
	for i, sc := range bus.spans {
		if !sc.IsValid() {
			t.Errorf("message %d carries no commit span", i)
		}
	}
}
