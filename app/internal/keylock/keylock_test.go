package keylock

import (
	"sync"
	"testing"
	"time"
)

// Holders of one key take turns; other keys do not wait for them; a key
// nobody holds or waits for is forgotten.
func TestOneHolderPerKey(t *testing.T) {
	var s Set
	unlockA := s.Lock("a")
	unlockB := s.Lock("b") // another key: does not wait for a
	got, left := make(chan struct{}), make(chan struct{})
	go func() {
		unlock := s.Lock("a")
		close(got)
		unlock()
		close(left)
	}()
	select {
	case <-got:
		t.Fatal("a second holder took a held key")
	case <-time.After(50 * time.Millisecond):
	}
	unlockA()
	select {
	case <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("the waiter did not get the key once it was freed")
	}
	<-left
	unlockB()
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() { defer wg.Done(); s.Lock("c")() }()
	}
	wg.Wait()
	if n := s.Len(); n != 0 {
		t.Fatalf("%d keys remembered after every holder left, want 0", n)
	}
}
