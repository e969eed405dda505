package procs

import (
	"context"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The number of Ps follows the load with hysteresis: up at once when one P
// is busy past Up, down only after Calm intervals below Down, and never on
// a load between the two.
func TestStepFollowsTheLoad(t *testing.T) {
	c := controller{max: 4, up: 0.75, down: 0.5, calm: 3, procs: 1}
	steps := []struct {
		load float64
		want int
	}{
		{0.1, 1}, {0.7, 1}, // below Up: one P
		{0.8, 4},                     // one core busy: every P
		{0.6, 4}, {0.4, 4}, {0.4, 4}, // calm twice, then not
		{0.6, 4},                     // between Down and Up: the count starts over
		{0.4, 4}, {0.3, 4}, {0.2, 1}, // three calm intervals in a row
		{0.74, 1}, {1.0, 4},
	}
	for i, s := range steps {
		if got := c.step(s.load); got != s.want {
			t.Fatalf("step %d (load %.2f): %d Ps, want %d", i, s.load, got, s.want)
		}
	}
}

// Run starts with one P, follows the measured load and gives back Max Ps
// when it ends.
func TestRunResizesWithTheMeasuredLoad(t *testing.T) {
	var (
		mu    sync.Mutex
		sets  []int
		load  atomic.Value // float64: the cores the fake process uses now
		cpu   time.Duration
		since = time.Now()
	)
	load.Store(0.1)
	fakeCPU := func() time.Duration {
		mu.Lock()
		defer mu.Unlock()
		now := time.Now()
		cpu += time.Duration(load.Load().(float64) * float64(now.Sub(since)))
		since = now
		return cpu
	}
	procs := func() int {
		mu.Lock()
		defer mu.Unlock()
		if len(sets) == 0 {
			return 0
		}
		return sets[len(sets)-1]
	}
	waitFor := func(want int) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); procs() != want; {
			if time.Now().After(deadline) {
				t.Fatalf("%d Ps, want %d", procs(), want)
			}
			time.Sleep(time.Millisecond)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		Run(ctx, Options{Max: 2, Interval: 5 * time.Millisecond, Calm: 4, CPU: fakeCPU,
			Set: func(n int) { mu.Lock(); sets = append(sets, n); mu.Unlock() }})
	}()
	waitFor(1)
	time.Sleep(50 * time.Millisecond) // ten light intervals: still one P
	if got := procs(); got != 1 {
		t.Fatalf("%d Ps under a light load, want 1", got)
	}
	load.Store(0.95)
	waitFor(2)
	load.Store(0.2)
	waitFor(1)
	cancel()
	<-done
	mu.Lock()
	defer mu.Unlock()
	if want := []int{1, 2, 1, 2}; !slices.Equal(sets, want) {
		t.Fatalf("Ps set %v, want %v", sets, want)
	}
}

// With one P to give, Run leaves the scheduler alone.
func TestRunWithOneProcDoesNothing(t *testing.T) {
	called := false
	Run(context.Background(), Options{Max: 1, Set: func(int) { called = true }})
	if called {
		t.Fatal("Run changed GOMAXPROCS with Max 1")
	}
}

// The process's CPU time is known here and grows with work.
func TestProcessCPUGrows(t *testing.T) {
	before := processCPU()
	if before <= 0 {
		t.Fatal("no process CPU time on this platform")
	}
	for end := time.Now().Add(30 * time.Millisecond); time.Now().Before(end); {
	}
	if after := processCPU(); after <= before {
		t.Fatalf("CPU time %v after busy work, %v before", after, before)
	}
}

// A GOMAXPROCS in the environment wins; otherwise a fixed count is set.
func TestSizeFollowsTheSetting(t *testing.T) {
	start := runtime.GOMAXPROCS(0)
	defer runtime.GOMAXPROCS(start)
	t.Setenv("GOMAXPROCS", strconv.Itoa(start))
	Size(context.Background(), start+2, nil)
	if got := runtime.GOMAXPROCS(0); got != start {
		t.Fatalf("GOMAXPROCS %d with it set in the environment, want %d", got, start)
	}
	os.Unsetenv("GOMAXPROCS")
	Size(context.Background(), start+2, nil)
	if got := runtime.GOMAXPROCS(0); got != start+2 {
		t.Fatalf("GOMAXPROCS %d, want the fixed %d", got, start+2)
	}
}
