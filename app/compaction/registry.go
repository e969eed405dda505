package compaction

import (
	"context"
	"fmt"
	"slices"

	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/kv"
)

// Registry is the set of collections written in a cluster, kept in the
// state store so the lease holder can walk collections that no config
// declares (collections.yaml allows undeclared ones by default), including
// those written through other replicas. Every replica adds the collections
// it writes the first time it sees them; the record only grows.
type Registry struct {
	state kv.Records
	key   string
}

// NewRegistry returns the registry of one cluster in a state store. The key
// starts with '_', which no collection name does, so it never collides with
// a document.
func NewRegistry(state kv.Records, cluster string) *Registry {
	return &Registry{state: state, key: "_autoglm:collections:" + cluster}
}

type registryRecord struct {
	Collections []string `json:"collections"`
}

// Load returns the recorded collections.
func (r *Registry) Load(ctx context.Context) ([]string, error) {
	var rec registryRecord
	if _, err := kv.Load(ctx, r.state, r.key, &rec); err != nil {
		return nil, fmt.Errorf("collections registry: %w", err)
	}
	return rec.Collections, nil
}

// Add records names, merging with concurrent writers by compare-and-swap.
func (r *Registry) Add(ctx context.Context, names []string) error {
	err := kv.Update(ctx, r.state, r.key, func(rec *registryRecord) (bool, error) {
		n := len(rec.Collections)
		for _, name := range names {
			if core.ValidCollection(name) && !slices.Contains(rec.Collections, name) {
				rec.Collections = append(rec.Collections, name)
			}
		}
		slices.Sort(rec.Collections)
		return len(rec.Collections) != n, nil
	})
	if err != nil {
		return fmt.Errorf("collections registry: %w", err)
	}
	return nil
}

// LockComponent returns an Options.HasLock that looks for the lock
// component name among the sidecar's registered components.
func LockComponent(c kv.Components, name string) func(ctx context.Context) (bool, error) {
	return func(ctx context.Context) (bool, error) { return c.Has(ctx, name, "lock") }
}
