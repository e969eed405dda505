// Package keylock serialises work per key: one mutex per key, which exists
// only while someone holds or waits for it, so the set stays as small as
// the keys in use however many keys pass through.
package keylock

import "sync"

// Set holds the per-key locks. The zero value is ready to use; it is safe
// for concurrent use.
type Set struct {
	mu    sync.Mutex
	locks map[string]*lock
}

type lock struct {
	mu   sync.Mutex
	refs int // holders and waiters
}

// Lock waits until key is free, takes it, and returns the function that
// frees it.
func (s *Set) Lock(key string) (unlock func()) {
	s.mu.Lock()
	if s.locks == nil {
		s.locks = map[string]*lock{}
	}
	l := s.locks[key]
	if l == nil {
		l = &lock{}
		s.locks[key] = l
	}
	l.refs++
	s.mu.Unlock()
	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		s.mu.Lock()
		if l.refs--; l.refs == 0 {
			delete(s.locks, key)
		}
		s.mu.Unlock()
	}
}

// Len returns how many keys are held or waited for.
func (s *Set) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.locks)
}
