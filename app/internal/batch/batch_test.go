package batch

import (
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/open-autoglm/autoglm/app/internal/testutil"
)

// gated runs batches one at a time, each held until released, and records
// them.
type gated struct {
	mu      sync.Mutex
	batches [][]int
	running int
	most    int
	entered chan struct{}
	release chan struct{}
}

func newGated() *gated {
	return &gated{entered: make(chan struct{}, 100), release: make(chan struct{}, 100)}
}

func (g *gated) run(batch []int) {
	g.mu.Lock()
	g.running++
	g.most = max(g.most, g.running)
	g.batches = append(g.batches, slices.Clone(batch))
	g.mu.Unlock()
	g.entered <- struct{}{}
	<-g.release
	g.mu.Lock()
	g.running--
	g.mu.Unlock()
}

func waitFor(t *testing.T, ch <-chan struct{}) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatal("no batch started")
	}
}

// The first item goes alone; what is added while a batch runs leaves
// together in the next one, cut as cut says, in order, one batch at a
// time.
func TestBatchesQueueWhileOneRuns(t *testing.T) {
	g := newGated()
	b := New(g.run, UpTo[int](3), 0)
	b.Add(0)
	waitFor(t, g.entered)
	for i := 1; i <= 5; i++ {
		b.Add(i)
	}
	if n := b.Waiting(); n != 5 {
		t.Fatalf("%d items wait behind the running batch, want 5", n)
	}
	for range 3 {
		g.release <- struct{}{}
	}
	waitFor(t, g.entered)
	waitFor(t, g.entered)
	b.Wait()
	want := [][]int{{0}, {1, 2, 3}, {4, 5}}
	if !slices.EqualFunc(g.batches, want, slices.Equal) {
		t.Fatalf("batches %v, want %v", g.batches, want)
	}
	if g.most != 1 {
		t.Fatalf("%d batches ran at once, want 1", g.most)
	}
}

// Past limit waiting items Add refuses; once the queue drains it takes
// items again and starts a new run.
func TestLimitRefuses(t *testing.T) {
	g := newGated()
	b := New(g.run, func(w []int) int { return len(w) }, 2)
	b.Add(0)
	waitFor(t, g.entered)
	if !b.Add(1) || !b.Add(2) {
		t.Fatal("an item within the limit was refused")
	}
	if b.Add(3) {
		t.Fatal("an item past the limit was queued")
	}
	g.release <- struct{}{}
	waitFor(t, g.entered)
	g.release <- struct{}{}
	b.Wait()
	if !b.Add(4) {
		t.Fatal("an item was refused by an idle batcher")
	}
	waitFor(t, g.entered)
	g.release <- struct{}{}
	b.Wait()
	want := [][]int{{0}, {1, 2}, {4}}
	if !slices.EqualFunc(g.batches, want, slices.Equal) {
		t.Fatalf("batches %v, want %v", g.batches, want)
	}
}

// A cut that asks for none, or for more than waits, still makes progress
// within what waits.
func TestCutIsBounded(t *testing.T) {
	for _, cut := range []func([]int) int{
		func([]int) int { return 0 },
		func([]int) int { return 100 },
	} {
		var mu sync.Mutex
		var got []int
		b := New(func(batch []int) {
			mu.Lock()
			got = append(got, batch...)
			mu.Unlock()
		}, cut, 0)
		for i := range 10 {
			b.Add(i)
		}
		testutil.Eventually(t, 5*time.Second, "every item ran", func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(got) == 10
		})
		b.Wait()
		if !slices.Equal(got, []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}) {
			t.Fatalf("items ran as %v, want in order", got)
		}
	}
}

// Do on an idle batcher runs the item's batch on the caller's goroutine and
// returns after it; items added meanwhile go on in the next batch, and a
// Do while a batch runs queues like Add.
func TestDoRunsOnTheCallerWhenIdle(t *testing.T) {
	g := newGated()
	var onCaller atomic.Bool
	run := func(batch []int) {
		if batch[0] == 0 {
			// The caller's frame is on this goroutine's stack only when
			// Do ran the batch itself.
			buf := make([]byte, 64<<10)
			onCaller.Store(strings.Contains(string(buf[:runtime.Stack(buf, false)]), "doCaller"))
		}
		g.run(batch)
	}
	b := New(run, UpTo[int](3), 0)
	returned := make(chan struct{})
	go doCaller(b, 0, returned)
	waitFor(t, g.entered)
	b.Add(1)
	if !b.Do(2) {
		t.Fatal("Do refused an item while a batch ran")
	}
	select {
	case <-returned:
		t.Fatal("Do returned before its batch ran")
	default:
	}
	g.release <- struct{}{}
	<-returned
	if !onCaller.Load() {
		t.Fatal("the idle Do's batch did not run on its caller's goroutine")
	}
	waitFor(t, g.entered)
	g.release <- struct{}{}
	b.Wait()
	want := [][]int{{0}, {1, 2}}
	if !slices.EqualFunc(g.batches, want, slices.Equal) {
		t.Fatalf("batches %v, want %v", g.batches, want)
	}
	if g.most != 1 {
		t.Fatalf("%d batches ran at once, want 1", g.most)
	}
}

//go:noinline
func doCaller(b *Batcher[int], item int, returned chan<- struct{}) {
	b.Do(item)
	close(returned)
}
