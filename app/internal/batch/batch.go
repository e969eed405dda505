// Package batch runs queued work in batches, one batch at a time: items
// added while a batch runs wait, and the next batch carries them together,
// in the order they were added. A busy caller then pays one round trip (a
// state transaction, a bulk read, a broadcast message) per batch instead
// of one per item, and an idle one pays no wait at all: the first item
// goes at once.
package batch

import "sync"

// Batcher queues items and hands them, in order, to its run function in
// batches; at most one batch runs at a time. It is safe for concurrent use.
type Batcher[T any] struct {
	run   func(batch []T)
	cut   func(waiting []T) int
	limit int

	mu      sync.Mutex
	waiting []T
	running bool
	done    sync.WaitGroup
}

// New returns a Batcher that hands each batch to run. cut says how many of
// the waiting items (oldest first, never none) the next batch carries;
// UpTo(n) takes at most n. limit bounds the items waiting, so that a
// stalled run does not queue without end; 0 is no bound.
func New[T any](run func(batch []T), cut func(waiting []T) int, limit int) *Batcher[T] {
	return &Batcher[T]{run: run, cut: cut, limit: limit}
}

// UpTo is a cut that takes at most n items per batch.
func UpTo[T any](n int) func(waiting []T) int {
	return func(waiting []T) int { return min(len(waiting), n) }
}

// Add queues item, starting a goroutine that runs batches until none wait
// if none is running. It reports false, and queues nothing, when limit
// items already wait.
func (b *Batcher[T]) Add(item T) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.limit > 0 && len(b.waiting) >= b.limit {
		return false
	}
	b.waiting = append(b.waiting, item)
	if !b.running {
		b.running = true
		b.done.Add(1)
		go b.drain()
	}
	return true
}

// Do is Add for a caller that waits for its item's outcome anyway. When no
// batch runs and none waits, the item's batch runs on the caller's
// goroutine, sparing a hand-off to another and back; items added meanwhile
// wait, and go on in the next batch on a goroutine of their own once it
// returns. Otherwise it is Add.
func (b *Batcher[T]) Do(item T) bool {
	b.mu.Lock()
	if b.running {
		b.mu.Unlock()
		return b.Add(item)
	}
	b.running = true
	b.done.Add(1)
	b.mu.Unlock()
	b.run([]T{item})
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.waiting) > 0 {
		go b.drain() // carries on with this run's count in done
		return true
	}
	b.running = false
	b.waiting = nil
	b.done.Done()
	return true
}

func (b *Batcher[T]) drain() {
	defer b.done.Done()
	for {
		b.mu.Lock()
		n := 0
		if len(b.waiting) > 0 {
			n = max(1, min(b.cut(b.waiting), len(b.waiting)))
		}
		if n == 0 {
			b.running = false
			b.waiting = nil
			b.mu.Unlock()
			return
		}
		batch := b.waiting[:n:n]
		b.waiting = b.waiting[n:]
		b.mu.Unlock()
		b.run(batch)
	}
}

// Waiting returns how many items wait for a batch (not those of the batch
// that runs).
func (b *Batcher[T]) Waiting() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.waiting)
}

// Wait returns once no batch runs and none waits.
func (b *Batcher[T]) Wait() { b.done.Wait() }
