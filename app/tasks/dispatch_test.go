package tasks

import (
	"context"
	"testing"
	"time"

	"github.com/open-autoglm/autoglm/app/internal/testutil"
)

func TestSmoothWRR(t *testing.T) {
	seq := smoothWRR([3]int{8, 3, 1})
	if len(seq) != 12 {
		t.Fatalf("cycle %v", seq)
	}
	var n [3]int
	run := 0
	for _, p := range seq {
		n[p]++
		if p == 0 {
			run++
			if run > 3 {
				t.Fatalf("high runs in a block, not interleaved: %v", seq)
			}
		} else {
			run = 0
		}
	}
	if n != [3]int{8, 3, 1} {
		t.Fatalf("shares %v in %v", n, seq)
	}
}

// TestDispatcherWeights fills every slot, lines up many waiters of each
// priority, and checks who gets the freed slots.
func TestDispatcherWeights(t *testing.T) {
	d := newDispatcher(1, [3]int{8, 3, 1})
	if err := d.acquire(context.Background(), 2); err != nil {
		t.Fatal(err)
	}
	order := make(chan int, 300)
	for p := 2; p >= 0; p-- { // low lines up first
		for range 100 {
			ready := make(chan struct{})
			go func() {
				close(ready)
				if d.acquire(context.Background(), p) == nil {
					order <- p
				}
			}()
			<-ready
		}
	}
	testutil.Eventually(t, 5*time.Second, "300 tasks waiting", func() bool {
		d.mu.Lock()
		defer d.mu.Unlock()
		return len(d.waiting[0])+len(d.waiting[1])+len(d.waiting[2]) == 300
	})
	var got [3]int
	for range 24 {
		d.release()
		got[<-order]++
	}
	if got != [3]int{16, 6, 2} {
		t.Fatalf("24 freed slots went %v, want 16 high, 6 medium, 2 low", got)
	}
	// Only low waits now and then: it gets every slot.
	d2 := newDispatcher(0, [3]int{8, 3, 1})
	go func() { _ = d2.acquire(context.Background(), 2); order <- 2 }()
	testutil.Eventually(t, 5*time.Second, "the task waiting", func() bool { d2.mu.Lock(); defer d2.mu.Unlock(); return len(d2.waiting[2]) == 1 })
	d2.release()
	if p := <-order; p != 2 {
		t.Fatalf("got %d", p)
	}
}

func TestDispatcherCancel(t *testing.T) {
	d := newDispatcher(1, [3]int{8, 3, 1})
	_ = d.acquire(context.Background(), 0)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := d.acquire(ctx, 1); err == nil {
		t.Fatal("acquire without a free slot succeeded")
	}
	d.release()
	// The cancelled waiter left its line: the slot is free again.
	if err := d.acquire(context.Background(), 2); err != nil {
		t.Fatal(err)
	}
}

// Submit racing Close neither panics nor blocks.
func TestSubmitDuringClose(t *testing.T) {
	q := New(Options{Buffer: 4})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 10000 {
			q.Submit(Task{Kind: "k"})
		}
	}()
	_ = q.Close(context.Background())
	<-done
	if q.Submit(Task{Kind: "k"}) {
		t.Fatal("Submit accepted a task after Close")
	}
}
