package compaction

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	dapr "github.com/dapr/go-sdk/client"

	"github.com/open-autoglm/autoglm/app/core"
)

// StateClient is the part of the Dapr client the registry uses.
type StateClient interface {
	GetState(ctx context.Context, storeName, key string, meta map[string]string) (*dapr.StateItem, error)
	SaveStateWithETag(ctx context.Context, storeName, key string, data []byte, etag string, meta map[string]string, so ...dapr.StateOption) error
}

// Registry is the set of collections written in a cluster, kept in the
// state store so the lease holder can walk collections that no config
// declares (collections.yaml allows undeclared ones by default), including
// those written through other replicas. Every replica adds the collections
// it writes the first time it sees them; the record only grows.
type Registry struct {
	client StateClient
	store  string
	key    string
}

// NewRegistry returns the registry of one cluster in a state store. The key
// starts with '_', which no collection name does, so it never collides with
// a document.
func NewRegistry(client StateClient, store, cluster string) *Registry {
	return &Registry{client: client, store: store, key: "_autoglm:collections:" + cluster}
}

type registryRecord struct {
	Collections []string `json:"collections"`
}

// Load returns the recorded collections and the record's ETag.
func (r *Registry) Load(ctx context.Context) ([]string, string, error) {
	item, err := r.client.GetState(ctx, r.store, r.key, nil)
	if err != nil {
		return nil, "", fmt.Errorf("collections registry: %w: %v", core.ErrUnavailable, err)
	}
	if item == nil || len(item.Value) == 0 {
		return nil, "", nil
	}
	var rec registryRecord
	if err := json.Unmarshal(item.Value, &rec); err != nil {
		return nil, "", fmt.Errorf("collections registry: decode: %w", err)
	}
	return rec.Collections, item.Etag, nil
}

// Add records names, merging with concurrent writers by compare-and-swap.
func (r *Registry) Add(ctx context.Context, names []string) error {
	var last error
	for attempt := 0; attempt < 10; attempt++ {
		have, etag, err := r.Load(ctx)
		if err != nil {
			return err
		}
		merged := slices.Clone(have)
		for _, n := range names {
			if core.ValidCollection(n) && !slices.Contains(merged, n) {
				merged = append(merged, n)
			}
		}
		if len(merged) == len(have) {
			return nil
		}
		slices.Sort(merged)
		b, _ := json.Marshal(registryRecord{Collections: merged})
		last = r.client.SaveStateWithETag(ctx, r.store, r.key, b, etag, nil,
			dapr.WithConcurrency(dapr.StateConcurrencyFirstWrite), dapr.WithConsistency(dapr.StateConsistencyStrong))
		if last == nil {
			return nil
		}
		if !conflict(last) {
			return fmt.Errorf("collections registry: %w", last)
		}
	}
	return fmt.Errorf("collections registry: still contended: %w", last)
}

// conflict reports whether a save lost to a concurrent writer (ETag mismatch
// or an existing key on a first write; the wording differs per store).
func conflict(err error) bool {
	m := strings.ToLower(err.Error())
	for _, s := range []string{"etag", "already exists", "duplicate key", "failed to set key", "no item was updated", "aborted"} {
		if strings.Contains(m, s) {
			return true
		}
	}
	return false
}

// MetadataClient is the Dapr metadata API.
type MetadataClient interface {
	GetMetadata(ctx context.Context) (*dapr.GetMetadataResponse, error)
}

// LockComponent returns an Options.HasLock that looks for the lock
// component name among the sidecar's registered components.
func LockComponent(c MetadataClient, name string) func(ctx context.Context) (bool, error) {
	return func(ctx context.Context) (bool, error) {
		md, err := c.GetMetadata(ctx)
		if err != nil {
			return false, err
		}
		for _, comp := range md.RegisteredComponents {
			if comp.Name == name && strings.HasPrefix(comp.Type, "lock.") {
				return true, nil
			}
		}
		return false, nil
	}
}
