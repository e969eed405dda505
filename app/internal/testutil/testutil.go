// Package testutil holds the synchronisation tests share: waiting for an
// outcome with a bounded deadline instead of sleeping a fixed time, and a
// buffer that several goroutines and processes log into.
package testutil

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"
)

// Every is how often Eventually checks its condition.
const Every = 10 * time.Millisecond

// Eventually waits until cond holds, checking it every Every, and fails the
// test naming what when it does not within timeout. It returns how long the
// wait took.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	if !Within(timeout, cond) {
		t.Fatalf("%s: not within %v", what, timeout)
	}
	return time.Since(start)
}

// Within waits until cond holds, checking it every Every, and reports
// whether it did within timeout: Eventually for a caller that explains a
// failure itself (with what it last saw) or that may not end the test.
func Within(timeout time.Duration, cond func() bool) bool {
	start := time.Now()
	for !cond() {
		if time.Since(start) > timeout {
			return false
		}
		time.Sleep(Every)
	}
	return true
}

// Buffer collects output written from several goroutines. With Max set,
// it starts over once it holds more than Max bytes.
type Buffer struct {
	Max int

	mu  sync.Mutex
	buf bytes.Buffer
}

// Write implements io.Writer.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.Max > 0 && b.buf.Len() > b.Max {
		b.buf.Reset()
		b.buf.WriteString("[log truncated]\n")
	}
	return b.buf.Write(p)
}

// Bytes returns a copy of what was written.
func (b *Buffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.buf.Bytes())
}

// String returns what was written.
func (b *Buffer) String() string { return string(b.Bytes()) }

// Seeded runs f as one subtest a seed, seeds 0 to full-1 (to short-1 under
// -short), each with the random source of its seed and stream, so a
// failure names the seed that reproduces it.
func Seeded(t *testing.T, full, short, stream uint64, f func(t *testing.T, rnd *rand.Rand)) {
	t.Helper()
	n := full
	if testing.Short() {
		n = short
	}
	for seed := range n {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { f(t, rand.New(rand.NewPCG(seed, stream))) })
	}
}
