package inmem

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/kv"
)

// State is a kv.State in memory: records with ETags and expiry, published
// messages kept in order and delivered to the subscribers of their topic
// (Subscribe), and expiring leases.
type State struct {
	mu      sync.Mutex
	records map[string]record
	etag    int64
	msgs    []kv.Message
	leases  map[string]lease
	groups  map[string]*group

	// Redelivery is how a message whose handler failed is delivered again.
	Redelivery Redelivery

	// Now is the clock of expiry (time.Now when nil).
	Now func() time.Time
	// Components lists the configured components as "kind:name"
	// (e.g. "pubsub:events"); Has answers from it.
	Components []string
	// BeforePut, if set, runs at the start of every Put (tests use it to
	// slip in a competing write).
	BeforePut func(key string)
	// Fail, if set, makes every call fail with it (an outage; wrap
	// core.ErrUnavailable to say so).
	Fail error
	// FailPuts makes that many of the next Puts fail as an outage
	// (core.ErrUnavailable), after which the store works again.
	FailPuts int
}

type record struct {
	value   []byte
	etag    string
	expires time.Time
}

type lease struct {
	owner   string
	expires time.Time
}

var _ kv.State = (*State)(nil)

// NewState returns an empty State.
func NewState() *State { return &State{records: map[string]record{}, leases: map[string]lease{}} }

func (s *State) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// current returns the live record at key; the caller holds s.mu.
func (s *State) current(key string) (record, bool) {
	r, ok := s.records[key]
	if ok && !r.expires.IsZero() && !s.now().Before(r.expires) {
		delete(s.records, key)
		return record{}, false
	}
	return r, ok
}

func (s *State) write(key string, value []byte, ttl time.Duration) {
	s.etag++
	r := record{value: slices.Clone(value), etag: strconv.FormatInt(s.etag, 10)}
	if ttl > 0 {
		r.expires = s.now().Add(ttl)
	}
	s.records[key] = r
}

// Get implements kv.Records.
func (s *State) Get(_ context.Context, key string) (kv.Item, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.Fail != nil {
		return kv.Item{}, s.Fail
	}
	r, ok := s.current(key)
	if !ok {
		return kv.Item{}, nil
	}
	return kv.Item{Value: slices.Clone(r.value), ETag: r.etag}, nil
}

// Put implements kv.Records.
func (s *State) Put(_ context.Context, key string, value []byte, etag string) error {
	if s.BeforePut != nil {
		s.BeforePut(key)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.Fail != nil {
		return s.Fail
	}
	if s.FailPuts > 0 {
		s.FailPuts--
		return fmt.Errorf("put %s: %w: connection refused", key, core.ErrUnavailable)
	}
	cur, exists := s.current(key)
	if stale(etag, exists, cur.etag) {
		return fmt.Errorf("put %s: %w", key, core.ErrVersionConflict)
	}
	s.write(key, value, 0)
	return nil
}

// GetMany implements kv.Transactor.
func (s *State) GetMany(_ context.Context, keys []string) ([]kv.Item, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.Fail != nil {
		return nil, s.Fail
	}
	out := make([]kv.Item, len(keys))
	for i, key := range keys {
		if r, ok := s.current(key); ok {
			out[i] = kv.Item{Value: slices.Clone(r.value), ETag: r.etag}
		}
	}
	return out, nil
}

// Transact implements kv.Transactor: every guard is checked against the
// records as they are before any write is applied, under one hold of the
// lock.
func (s *State) Transact(_ context.Context, writes []kv.Write) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.Fail != nil {
		return s.Fail
	}
	for _, w := range writes {
		cur, exists := s.current(w.Key)
		if stale(w.ETag, exists, cur.etag) {
			return fmt.Errorf("transact %s: %w", w.Key, core.ErrVersionConflict)
		}
	}
	for _, w := range writes {
		s.write(w.Key, w.Value, 0)
	}
	return nil
}

// Set implements kv.Records.
func (s *State) Set(_ context.Context, key string, value []byte, ttl time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.Fail != nil {
		return s.Fail
	}
	s.write(key, value, ttl)
	return nil
}

// Publish implements kv.Publisher.
func (s *State) Publish(_ context.Context, m kv.Message) error {
	s.mu.Lock()
	if s.Fail != nil {
		s.mu.Unlock()
		return s.Fail
	}
	m.Body = slices.Clone(m.Body)
	s.msgs = append(s.msgs, m)
	s.dispatch(m)
	s.mu.Unlock()
	return nil
}

// Messages returns the messages published so far, oldest first.
func (s *State) Messages() []kv.Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.msgs)
}

// TryLock implements kv.Locker.
func (s *State) TryLock(_ context.Context, resource, owner string, ttl time.Duration) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.Fail != nil {
		return false, s.Fail
	}
	now := s.now()
	if l, ok := s.leases[resource]; ok && now.Before(l.expires) {
		return false, nil // held, even by owner (as lock.redis answers)
	}
	s.leases[resource] = lease{owner: owner, expires: now.Add(ttl)}
	return true, nil
}

// Unlock implements kv.Locker.
func (s *State) Unlock(_ context.Context, resource, owner string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.Fail != nil {
		return false, s.Fail
	}
	l, ok := s.leases[resource]
	if !ok || !s.now().Before(l.expires) {
		delete(s.leases, resource)
		return true, nil
	}
	if l.owner != owner {
		return false, nil
	}
	delete(s.leases, resource)
	return true, nil
}

// Has implements kv.Components.
func (s *State) Has(_ context.Context, name, kind string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.Fail != nil {
		return false, s.Fail
	}
	return slices.ContainsFunc(s.Components, func(c string) bool {
		k, n, _ := strings.Cut(c, ":")
		return k == kind && n == name
	}), nil
}

// Holder returns the owner of resource's lease, or "" when nobody holds it.
func (s *State) Holder(resource string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if l, ok := s.leases[resource]; ok && s.now().Before(l.expires) {
		return l.owner
	}
	return ""
}
