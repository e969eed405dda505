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
	time.Sleep(5 * time.Millisecond)
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
		var g txGroup
		f := &fakeTx{}
		var wg sync.WaitGroup
		const n = 50
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := g.exec(context.Background(), f, "s", op("k"+string(rune('A'+i)))); err != nil {
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
		var g txGroup
		// Hold the store busy so the next three commits queue into one group.
		entered, gate := make(chan struct{}), make(chan struct{})
		var once sync.Once
		f := &fakeTx{hold: func() { once.Do(func() { close(entered); <-gate }) }}
		first := make(chan error, 1)
		go func() { first <- g.exec(context.Background(), f, "s", op("warm")) }()
		<-entered
		results := make([]error, 3)
		var wg sync.WaitGroup
		for i, k := range []string{"a", "bad", "c"} {
			wg.Add(1)
			go func() { defer wg.Done(); results[i] = g.exec(context.Background(), f, "s", op(k)) }()
		}
		testutil.Eventually(t, 5*time.Second, "three commits queued", func() bool {
			g.mu.Lock()
			defer g.mu.Unlock()
			return len(g.queue) == 3
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
