package testutil

import (
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"
)

// fakeT records a failure instead of ending the test.
type fakeT struct {
	testing.TB
	failed string
}

func (f *fakeT) Helper() {}

func (f *fakeT) Fatalf(format string, args ...any) {
	f.failed = fmt.Sprintf(format, args...)
	panic(f)
}

func eventually(timeout time.Duration, cond func() bool) (failed string) {
	f := &fakeT{}
	defer func() {
		if r := recover(); r != nil && r != f {
			panic(r)
		}
		failed = f.failed
	}()
	Eventually(f, timeout, "the thing", cond)
	return ""
}

func TestEventually(t *testing.T) {
	var n atomic.Int32
	if failed := eventually(time.Second, func() bool { return n.Add(1) >= 3 }); failed != "" || n.Load() != 3 {
		t.Fatalf("a condition that holds on the third check: failed %q after %d checks", failed, n.Load())
	}
	start := time.Now()
	if failed := eventually(50*time.Millisecond, func() bool { return false }); failed != "the thing: not within 50ms" {
		t.Fatalf("a condition that never holds: %q", failed)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("gave up after %v, want about 50ms", d)
	}
}

func TestWithin(t *testing.T) {
	var n atomic.Int32
	if !Within(time.Second, func() bool { return n.Add(1) >= 3 }) || n.Load() != 3 {
		t.Fatalf("a condition that holds on the third check: %d checks", n.Load())
	}
	start := time.Now()
	if Within(50*time.Millisecond, func() bool { return false }) {
		t.Fatal("a condition that never holds held")
	}
	if d := time.Since(start); d < 50*time.Millisecond || d > 2*time.Second {
		t.Fatalf("gave up after %v, want about 50ms", d)
	}
}

func TestBufferMax(t *testing.T) {
	b := &Buffer{Max: 4}
	fmt.Fprint(b, "12345")
	fmt.Fprint(b, "6")
	if got := b.String(); got != "[log truncated]\n6" {
		t.Fatalf("%q", got)
	}
}

func TestSeeded(t *testing.T) {
	var names []string
	var draws []uint64
	Seeded(t, 3, 2, 5, func(t *testing.T, rnd *rand.Rand) {
		names = append(names, t.Name())
		draws = append(draws, rnd.Uint64())
	})
	want := 3
	if testing.Short() {
		want = 2
	}
	if len(names) != want || names[0] != "TestSeeded/0" || names[want-1] != fmt.Sprintf("TestSeeded/%d", want-1) {
		t.Fatalf("subtests %q, want seeds 0 to %d", names, want-1)
	}
	for seed, got := range draws {
		if w := rand.New(rand.NewPCG(uint64(seed), 5)).Uint64(); got != w {
			t.Fatalf("seed %d drew %d, want %d from its own source", seed, got, w)
		}
	}
}
