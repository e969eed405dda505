package kv

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/open-autoglm/autoglm/app/core"
)

// Attempts bounds the tries of Retry and Update.
const Attempts = 16

// Retry runs attempt until it succeeds, fails with something other than a
// lost race (core.ErrVersionConflict), or has lost Attempts races. Between
// tries it waits a random time (full jitter) that grows per lost race, so
// writers that collided do not collide again in lockstep. An outage
// (core.ErrUnavailable) is returned at once: it is not a race.
func Retry(ctx context.Context, attempt func(ctx context.Context) error) error {
	var err error
	for i := range Attempts {
		if err = attempt(ctx); err == nil || !errors.Is(err, core.ErrVersionConflict) {
			return err
		}
		if i == Attempts-1 {
			break
		}
		d := min(time.Millisecond<<i, 100*time.Millisecond)
		t := time.NewTimer(rand.N(d + 1))
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
	return fmt.Errorf("still contended after %d tries: %w", Attempts, err)
}

// Load reads the JSON record at key into v and returns its ETag; a missing
// record leaves v as it is and returns an empty ETag.
func Load(ctx context.Context, r Records, key string, v any) (string, error) {
	item, err := r.Get(ctx, key)
	if err != nil {
		return "", err
	}
	if !item.Exists() {
		return "", nil
	}
	if err := json.Unmarshal(item.Value, v); err != nil {
		return "", fmt.Errorf("decode %s: %w", key, err)
	}
	return item.ETag, nil
}

// Save writes v as JSON at key, guarded by etag (see Records.Put).
func Save(ctx context.Context, r Records, key, etag string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return r.Put(ctx, key, b, etag)
}

// Update reads the JSON record at key, lets fn change it, and writes it
// back guarded by the ETag it read, starting again from a fresh read when
// another writer got there first (Retry). fn may run more than once, each
// time on a freshly decoded value; it returns false to leave the record as
// it is, or an error to stop.
func Update[T any](ctx context.Context, r Records, key string, fn func(v *T) (bool, error)) error {
	return Retry(ctx, func(ctx context.Context) error {
		var v T
		etag, err := Load(ctx, r, key, &v)
		if err != nil {
			return err
		}
		write, err := fn(&v)
		if err != nil || !write {
			return err
		}
		return Save(ctx, r, key, etag, &v)
	})
}
