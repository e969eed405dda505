// Package daprkv implements kv.State over the Dapr APIs: records on a
// state store (bulk reads, state transactions), messages on pub/sub
// components, leases on a lock component, and the sidecar's metadata for
// which components exist. Errors are
// classified as the document store classifies them (daprstore.Classify).
package daprkv

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"

	dapr "github.com/dapr/go-sdk/client"

	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/daprstore"
	"github.com/open-autoglm/autoglm/app/internal/daprconn"
	"github.com/open-autoglm/autoglm/app/kv"
)

// Client is the part of the Dapr client the adapter uses.
type Client interface {
	GetState(ctx context.Context, storeName, key string, meta map[string]string) (*dapr.StateItem, error)
	GetBulkState(ctx context.Context, storeName string, keys []string, meta map[string]string, parallelism int32) ([]*dapr.BulkStateItem, error)
	ExecuteStateTransaction(ctx context.Context, storeName string, meta map[string]string, ops []*dapr.StateOperation) error
	SaveState(ctx context.Context, storeName, key string, data []byte, meta map[string]string, so ...dapr.StateOption) error
	SaveStateWithETag(ctx context.Context, storeName, key string, data []byte, etag string, meta map[string]string, so ...dapr.StateOption) error
	PublishEvent(ctx context.Context, pubsubName, topicName string, data interface{}, opts ...dapr.PublishEventOption) error
	TryLockAlpha1(ctx context.Context, storeName string, request *dapr.LockRequest) (*dapr.LockResponse, error)
	UnlockAlpha1(ctx context.Context, storeName string, request *dapr.UnlockRequest) (*dapr.UnlockResponse, error)
	GetMetadata(ctx context.Context) (*dapr.GetMetadataResponse, error)
}

// State is a kv.State on a Dapr sidecar.
type State struct {
	client    Client
	store     string
	lockStore string
	close     func() error

	mu   sync.Mutex
	kind string // the state store's component type, once known
}

var _ kv.State = (*State)(nil)

// New returns the adapter: records go to the state store component store,
// leases to the lock component lockStore.
func New(client Client, store, lockStore string) *State {
	return &State{client: client, store: store, lockStore: lockStore}
}

// Dial connects the adapter to the sidecar whose gRPC API listens on
// 127.0.0.1:grpcPort, presenting token as dapr-api-token (none when
// empty). The connection is lazy: the sidecar may start after the app, and
// calls fail as unavailable until it answers. Close releases it.
func Dial(grpcPort int, token, store, lockStore string) (*State, error) {
	conn, err := daprconn.Dial(grpcPort, token)
	if err != nil {
		return nil, fmt.Errorf("dapr client: %w", err)
	}
	s := New(dapr.NewClientWithConnection(conn), store, lockStore)
	s.close = conn.Close
	return s, nil
}

// Close releases the connection Dial made. The client of a State from New
// belongs to its caller, and Close leaves it open.
func (s *State) Close() error {
	if s.close == nil {
		return nil
	}
	return s.close()
}

// Get implements kv.Records.
func (s *State) Get(ctx context.Context, key string) (kv.Item, error) {
	item, err := s.client.GetState(ctx, s.store, key, nil)
	if err != nil {
		return kv.Item{}, daprstore.Classify("read "+key, err)
	}
	if item == nil || len(item.Value) == 0 {
		return kv.Item{}, nil
	}
	return kv.Item{Value: item.Value, ETag: item.Etag}, nil
}

// GetMany implements kv.Transactor with one bulk read.
func (s *State) GetMany(ctx context.Context, keys []string) ([]kv.Item, error) {
	items, err := s.client.GetBulkState(ctx, s.store, keys, nil, 4)
	if err != nil {
		return nil, daprstore.Classify("read "+strings.Join(keys, ", "), err)
	}
	byKey := make(map[string]*dapr.BulkStateItem, len(items))
	for _, it := range items {
		byKey[it.Key] = it
	}
	out := make([]kv.Item, len(keys))
	for i, key := range keys {
		it := byKey[key]
		switch {
		case it == nil:
		case it.Error != "":
			// A key the store could not read is not a missing record.
			return nil, daprstore.Classify("read "+key, errors.New(it.Error))
		case len(it.Value) > 0:
			out[i] = kv.Item{Value: it.Value, ETag: it.Etag}
		}
	}
	return out, nil
}

// Transact implements kv.Transactor with one state transaction: every
// write an upsert with first-write concurrency, guarded by its ETag (none:
// the key must not exist), and strong consistency, as Put writes one.
//
// All or nothing holds only on stores whose transactions roll back as a
// whole (SQLite, PostgreSQL, ...). Dapr's Redis store runs a transaction
// as MULTI/EXEC: a stale ETag fails its own command while the other writes
// still apply, and a create inside a transaction is not guarded. On
// state.redis Transact therefore writes nothing and fails with
// errors.ErrUnsupported.
func (s *State) Transact(ctx context.Context, writes []kv.Write) error {
	if len(writes) == 0 {
		return nil
	}
	if err := s.transactional(ctx); err != nil {
		return err
	}
	ops := make([]*dapr.StateOperation, len(writes))
	keys := make([]string, len(writes))
	for i, w := range writes {
		item := &dapr.SetStateItem{Key: w.Key, Value: w.Value,
			Options: &dapr.StateOptions{Concurrency: dapr.StateConcurrencyFirstWrite, Consistency: dapr.StateConsistencyStrong}}
		if w.ETag != "" {
			item.Etag = &dapr.ETag{Value: w.ETag}
		}
		ops[i] = &dapr.StateOperation{Type: dapr.StateOperationTypeUpsert, Item: item}
		keys[i] = w.Key
	}
	err := s.client.ExecuteStateTransaction(ctx, s.store, nil, ops)
	return daprstore.Classify("write "+strings.Join(keys, ", "), err)
}

// transactional fails unless the state store's transactions are all or
// nothing; it asks the sidecar once.
func (s *State) transactional(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.kind == "" {
		md, err := s.client.GetMetadata(ctx)
		if err != nil {
			return fmt.Errorf("metadata: %w: %v", core.ErrUnavailable, err)
		}
		c := daprconn.Component(md, s.store)
		if c == nil {
			return fmt.Errorf("state store %q is not registered with the sidecar: %w", s.store, core.ErrUnavailable)
		}
		s.kind = c.Type
	}
	if s.kind == "state.redis" {
		return fmt.Errorf("state store %q (%s) cannot write several records all or nothing: %w", s.store, s.kind, errors.ErrUnsupported)
	}
	return nil
}

// Put implements kv.Records: first-write concurrency with the ETag read (or
// none, which makes it a create of a key that must not exist), and strong
// consistency.
func (s *State) Put(ctx context.Context, key string, value []byte, etag string) error {
	opts := []dapr.StateOption{dapr.WithConcurrency(dapr.StateConcurrencyFirstWrite), dapr.WithConsistency(dapr.StateConsistencyStrong)}
	var err error
	if etag == "" {
		err = s.client.SaveState(ctx, s.store, key, value, nil, opts...)
	} else {
		err = s.client.SaveStateWithETag(ctx, s.store, key, value, etag, nil, opts...)
	}
	return daprstore.Classify("write "+key, err)
}

// Set implements kv.Records.
func (s *State) Set(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	var meta map[string]string
	if ttl > 0 {
		meta = map[string]string{"ttlInSeconds": strconv.Itoa(max(int(ttl/time.Second), 1))}
	}
	return daprstore.Classify("write "+key, s.client.SaveState(ctx, s.store, key, value, meta))
}

// Publish implements kv.Publisher.
func (s *State) Publish(ctx context.Context, m kv.Message) error {
	var opts []dapr.PublishEventOption
	if m.ContentType != "" {
		opts = append(opts, dapr.PublishEventWithContentType(m.ContentType))
	}
	if len(m.Metadata) > 0 {
		opts = append(opts, dapr.PublishEventWithMetadata(m.Metadata))
	}
	if err := s.client.PublishEvent(ctx, m.Pubsub, m.Topic, m.Body, opts...); err != nil {
		return fmt.Errorf("publish %s/%s: %w: %v", m.Pubsub, m.Topic, core.ErrUnavailable, err)
	}
	return nil
}

// TryLock implements kv.Locker. The lock API counts expiry in whole
// seconds; ttl is rounded up.
func (s *State) TryLock(ctx context.Context, resource, owner string, ttl time.Duration) (bool, error) {
	secs := int32(math.Ceil(ttl.Seconds()))
	r, err := s.client.TryLockAlpha1(ctx, s.lockStore, &dapr.LockRequest{
		ResourceID: resource, LockOwner: owner, ExpiryInSeconds: max(secs, 1)})
	if err != nil {
		return false, daprstore.Classify("lock "+resource, err)
	}
	return r.Success, nil
}

// Unlock implements kv.Locker.
func (s *State) Unlock(ctx context.Context, resource, owner string) (bool, error) {
	r, err := s.client.UnlockAlpha1(ctx, s.lockStore, &dapr.UnlockRequest{ResourceID: resource, LockOwner: owner})
	if err != nil {
		return false, daprstore.Classify("unlock "+resource, err)
	}
	return r.Status == "SUCCESS" || r.Status == "LOCK_DOES_NOT_EXIST", nil
}

// Has implements kv.Components from the sidecar's registered components,
// whose types read "<kind>.<implementation>".
func (s *State) Has(ctx context.Context, name, kind string) (bool, error) {
	md, err := s.client.GetMetadata(ctx)
	if err != nil {
		return false, fmt.Errorf("metadata: %w: %v", core.ErrUnavailable, err)
	}
	c := daprconn.Component(md, name)
	return c != nil && strings.HasPrefix(c.Type, kind+"."), nil
}
