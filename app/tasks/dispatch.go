package tasks

import (
	"context"
	"sync"
)

// dispatcher hands a fixed number of worker slots to waiting deliveries.
// When slots are free a delivery takes one at once; otherwise it waits in
// its priority's FIFO line, and each freed slot goes to the line named next
// by a smooth weighted round-robin sequence that skips empty lines. With
// weights 8:3:1 a high-priority delivery waits at most for the next freed
// slot, while low work still gets one slot in twelve under a flood of high
// work.
type dispatcher struct {
	mu      sync.Mutex
	free    int
	waiting [3][]chan struct{}
	seq     []int
	pos     int
}

func newDispatcher(slots int, weights [3]int) *dispatcher {
	return &dispatcher{free: slots, seq: smoothWRR(weights)}
}

// smoothWRR spreads the priorities over one cycle in proportion to their
// weights, interleaved rather than in runs (nginx's smooth weighted
// round-robin).
func smoothWRR(w [3]int) []int {
	total := 0
	for i := range w {
		w[i] = max(w[i], 1)
		total += w[i]
	}
	var cur [3]int
	seq := make([]int, 0, total)
	for range total {
		best := 0
		for i := range w {
			cur[i] += w[i]
			if cur[i] > cur[best] {
				best = i
			}
		}
		cur[best] -= total
		seq = append(seq, best)
	}
	return seq
}

// acquire waits for a slot for priority p (0 high .. 2 low).
func (d *dispatcher) acquire(ctx context.Context, p int) error {
	d.mu.Lock()
	if d.free > 0 {
		d.free--
		d.mu.Unlock()
		return nil
	}
	ch := make(chan struct{})
	d.waiting[p] = append(d.waiting[p], ch)
	d.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		d.mu.Lock()
		for i, c := range d.waiting[p] {
			if c == ch {
				d.waiting[p] = append(d.waiting[p][:i], d.waiting[p][i+1:]...)
				d.mu.Unlock()
				return ctx.Err()
			}
		}
		d.mu.Unlock()
		// The slot was handed over just as ctx ended: pass it on.
		d.release()
		return ctx.Err()
	}
}

// release frees a slot: it goes to the next waiting delivery by weight.
func (d *dispatcher) release() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for i := range d.seq {
		p := d.seq[(d.pos+i)%len(d.seq)]
		if len(d.waiting[p]) == 0 {
			continue
		}
		d.pos = (d.pos + i + 1) % len(d.seq)
		ch := d.waiting[p][0]
		d.waiting[p] = d.waiting[p][1:]
		close(ch)
		return
	}
	d.free++
}
