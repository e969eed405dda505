package webhooks

import (
	"context"

	"github.com/open-autoglm/autoglm/app/kv"
)

// load reads a JSON record and its ETag; a missing record leaves v as is.
func (s *Service) load(ctx context.Context, key string, v any) (string, error) {
	return kv.Load(ctx, s.opt.State, key, v)
}

// save writes a record guarded by the ETag it was read with (first-write
// when it did not exist); a lost race wraps core.ErrVersionConflict.
func (s *Service) save(ctx context.Context, key, etag string, v any) error {
	return kv.Save(ctx, s.opt.State, key, etag, v)
}

// update applies fn to a record under compare-and-swap, retrying lost
// races (kv.Update). fn returns false to leave the record unwritten.
func update[T any](ctx context.Context, s *Service, key string, fn func(*T) bool) error {
	return kv.Update(ctx, s.opt.State, key, func(v *T) (bool, error) { return fn(v), nil })
}
