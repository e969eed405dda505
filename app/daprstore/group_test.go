package daprstore

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	dapr "github.com/dapr/go-sdk/client"

	"github.com/open-autoglm/autoglm/app/internal/testutil"
)

// fakeTx records transactions; a transaction containing the key "bad"
// fails as a whole, and each transaction takes a moment, so commits queue.
type fakeTx struct {
	mu    sync.Mutex
	calls [][]string
	// hold, if set, runs first in every transaction.
	hold func()
}

var errStale = errors.New("possible etag mismatch")

func (f *fakeTx) ExecuteStateTransaction(ctx context.Context, store string, meta map[string]string, ops []*dapr.StateOperation) error {
	if f.hold != nil {
		f.hold()
	}
	time.Sleep(5 * time.Millisecond) // a transaction's round trip: commits queue behind it
	var keys []string
	for _, o := range ops {
		keys = append(keys, o.Item.Key)
	}
	f.mu.Lock()
	f.calls = append(f.calls, keys)
	f.mu.Unlock()
	for _, k := range keys {
		if k == "bad" {
			return errStale
		}
	}
	return nil
}

func op(key string) []*dapr.StateOperation {
	return []*dapr.StateOperation{{Type: dapr.StateOperationTypeUpsert, Item: &dapr.SetStateItem{Key: key}}}
}

func TestGroupCommit(t *testing.T) {
	t.Run("OK", func(t *testing.T) {
		f := &fakeTx{}
		g := newTxGroup(f, "s")
		var wg sync.WaitGroup
		const n = 50
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := g.exec(context.Background(), op("k"+string(rune('A'+i)))); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		total := 0
		for _, c := range f.calls {
			total += len(c)
		}
		if total != n || len(f.calls) >= n {
			t.Fatalf("%d commits ran as %d transactions with %d ops; want fewer transactions than commits, every op once", n, len(f.calls), total)
		}
	})
	t.Run("ErrOneConflicts", func(t *testing.T) {
		// Hold the store busy so the next three commits queue into one group.
		entered, gate := make(chan struct{}), make(chan struct{})
		var once sync.Once
		f := &fakeTx{hold: func() { once.Do(func() { close(entered); <-gate }) }}
		g := newTxGroup(f, "s")
		first := make(chan error, 1)
		go func() { first <- g.exec(context.Background(), op("warm")) }()
		<-entered
		results := make([]error, 3)
		var wg sync.WaitGroup
		for i, k := range []string{"a", "bad", "c"} {
			wg.Add(1)
			go func() { defer wg.Done(); results[i] = g.exec(context.Background(), op(k)) }()
		}
		testutil.Eventually(t, 5*time.Second, "three commits queued", func() bool {
			return g.batches.Waiting() == 3
		})
		close(gate)
		wg.Wait()
		if err := <-first; err != nil {
			t.Fatal(err)
		}
		if results[0] != nil || !errors.Is(results[1], errStale) || results[2] != nil {
			t.Fatalf("results %v: want only the conflicting commit to fail", results)
		}
	})
}

// fakeReads serves reads from a map; each round trip takes a moment, so
// reads queue. A bulk read fails as a whole when it asks for "down".
// fakeReads is a store whose every round trip hands the test a channel
// (gate) and waits until the test closes it, so the test decides what
// queues behind a read in flight.
type fakeReads struct {
	mu    sync.Mutex
	data  map[string]string
	trips [][]string
	gate  chan chan struct{}
}

func (f *fakeReads) roundTrip() {
	c := make(chan struct{})
	f.gate <- c
	<-c
}

func (f *fakeReads) GetState(ctx context.Context, store, key string, meta map[string]string) (*dapr.StateItem, error) {
	f.roundTrip()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.trips = append(f.trips, []string{key})
	if key == "down" {
		return nil, errors.New("store unreachable")
	}
	return &dapr.StateItem{Key: key, Value: []byte(f.data[key]), Etag: "e-" + key}, nil
}

func (f *fakeReads) GetBulkState(ctx context.Context, store string, keys []string, meta map[string]string, par int32) ([]*dapr.BulkStateItem, error) {
	f.roundTrip()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.trips = append(f.trips, keys)
	var out []*dapr.BulkStateItem
	for _, k := range keys {
		if k == "down" {
			return nil, errors.New("store unreachable")
		}
		if v, ok := f.data[k]; ok {
			out = append(out, &dapr.BulkStateItem{Key: k, Value: []byte(v), Etag: "e-" + k})
		}
	}
	return out, nil
}

// Reads queued behind a running one go together; each gets its own value
// and ETag, a key read twice gets the same answer, a missing key reads as
// empty, and a failed bulk read fails every read in it.
func TestLoadGroupReadsTogether(t *testing.T) {
	f := &fakeReads{data: map[string]string{"a": "1", "b": "2", "c": "3"}, gate: make(chan chan struct{})}
	g := newLoadGroup(f, "s")
	ctx := context.Background()
	type answer struct {
		value, etag string
		err         error
	}
	// read starts the first key's read, queues the others behind its
	// round trip, then lets the round trips finish.
	read := func(keys ...string) []answer {
		out := make([]answer, len(keys))
		var wg sync.WaitGroup
		var first chan struct{}
		for i, k := range keys {
			wg.Add(1)
			go func() {
				defer wg.Done()
				it, err := g.get(ctx, k)
				if err == nil {
					out[i] = answer{value: string(it.Value), etag: it.Etag}
				} else {
					out[i] = answer{err: err}
				}
			}()
			if i == 0 {
				first = <-f.gate // the first read is in its round trip
			}
		}
		testutil.Eventually(t, 10*time.Second, "the other reads queued", func() bool { return g.batches.Waiting() == len(keys)-1 })
		close(first)
		close(<-f.gate) // the queued reads' one round trip
		wg.Wait()
		return out
	}
	got := read("a", "b", "c", "b", "missing")
	want := []answer{{"1", "e-a", nil}, {"2", "e-b", nil}, {"3", "e-c", nil}, {"2", "e-b", nil}, {"", "", nil}}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("read %d: %+v, want %+v", i, got[i], want[i])
		}
	}
	if len(f.trips) != 2 {
		t.Errorf("5 reads took round trips %v, want 2 (the first alone, the rest together)", f.trips)
	}
	got = read("a", "b", "down")
	if got[0].err != nil || got[1].err == nil || got[2].err == nil {
		t.Errorf("a bulk read that failed: %+v", got)
	}
	idle := make(chan struct{})
	go func() { g.batches.Wait(); close(idle) }()
	select {
	case <-idle:
	case <-time.After(time.Second):
		t.Error("the group did not go idle")
	}
}

// stuckSidecar answers no call until the call's context ends.
type stuckSidecar struct{}

func (stuckSidecar) GetState(ctx context.Context, store, key string, meta map[string]string) (*dapr.StateItem, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

func (stuckSidecar) GetBulkState(ctx context.Context, store string, keys []string, meta map[string]string, par int32) ([]*dapr.BulkStateItem, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

func (stuckSidecar) ExecuteStateTransaction(ctx context.Context, store string, meta map[string]string, ops []*dapr.StateOperation) error {
	<-ctx.Done()
	return ctx.Err()
}

// A read or commit that goes alone is the caller's own call: it ends at
// the caller's deadline when the sidecar does not answer, as it would
// without the group, not at the group's 30 s bound.
func TestALoneCallEndsWithItsCaller(t *testing.T) {
	loads, txs := newLoadGroup(stuckSidecar{}, "s"), newTxGroup(stuckSidecar{}, "s")
	for name, call := range map[string]func(context.Context) error{
		"read":   func(ctx context.Context) error { _, err := loads.get(ctx, "k"); return err },
		"commit": func(ctx context.Context) error { return txs.exec(ctx, op("k")) },
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		done := make(chan error, 1)
		go func() { done <- call(ctx) }()
		select {
		case err := <-done:
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("%s: %v, want the caller's deadline", name, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s still waits 5 s after its caller's 50 ms deadline", name)
		}
		cancel()
	}
}
