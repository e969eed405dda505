package webhooks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	dapr "github.com/dapr/go-sdk/client"
)

// StateClient is the part of the Dapr client the webhooks use.
type StateClient interface {
	GetState(ctx context.Context, storeName, key string, meta map[string]string) (*dapr.StateItem, error)
	SaveState(ctx context.Context, storeName, key string, data []byte, meta map[string]string, so ...dapr.StateOption) error
	SaveStateWithETag(ctx context.Context, storeName, key string, data []byte, etag string, meta map[string]string, so ...dapr.StateOption) error
}

// errConflict: another writer changed the record between read and write.
var errConflict = errors.New("state changed concurrently")

// load reads a JSON record and its ETag; a missing record leaves v as is.
func (s *Service) load(ctx context.Context, key string, v any) (string, error) {
	item, err := s.opt.Client.GetState(ctx, s.opt.Store, key, nil)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", key, err)
	}
	if item == nil || len(item.Value) == 0 {
		return "", nil
	}
	if err := json.Unmarshal(item.Value, v); err != nil {
		return "", fmt.Errorf("decode %s: %w", key, err)
	}
	return item.Etag, nil
}

// save writes a record guarded by the ETag it was read with (first-write
// when it did not exist); a lost race is errConflict.
func (s *Service) save(ctx context.Context, key, etag string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	opts := []dapr.StateOption{dapr.WithConcurrency(dapr.StateConcurrencyFirstWrite), dapr.WithConsistency(dapr.StateConsistencyStrong)}
	if etag == "" {
		err = s.opt.Client.SaveState(ctx, s.opt.Store, key, b, nil, opts...)
	} else {
		err = s.opt.Client.SaveStateWithETag(ctx, s.opt.Store, key, b, etag, nil, opts...)
	}
	if err != nil {
		// Stores word a lost race differently (Aborted, "etag mismatch",
		// "failed to set key"); the caller reloads and tries again, and a
		// real outage fails the next read.
		return fmt.Errorf("%w: %s: %v", errConflict, key, err)
	}
	return nil
}

// update applies fn to a record under compare-and-swap, retrying lost
// races. fn returns false to leave the record unwritten.
func update[T any](ctx context.Context, s *Service, key string, fn func(*T) bool) error {
	var err error
	for range 20 {
		var v T
		var etag string
		if etag, err = s.load(ctx, key, &v); err != nil {
			return err
		}
		if !fn(&v) {
			return nil
		}
		if err = s.save(ctx, key, etag, &v); err == nil || !errors.Is(err, errConflict) {
			return err
		}
	}
	return err
}
