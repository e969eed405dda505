package daprkv_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/open-autoglm/autoglm/app/config"
	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/daprkv"
	"github.com/open-autoglm/autoglm/app/internal/daprtest"
	"github.com/open-autoglm/autoglm/app/internal/kvtest"
	"github.com/open-autoglm/autoglm/app/kv"
)

// eachStore runs f against the adapter on each profile's state store,
// within 30 s.
func eachStore(t *testing.T, f func(t *testing.T, ctx context.Context, r *daprtest.Replica, s *daprkv.State)) {
	daprtest.EachProfile(t, func(t *testing.T, r *daprtest.Replica) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		f(t, ctx, r, daprkv.New(r.DaprClient(t), config.DefaultStateStore, config.DefaultLockStore))
	})
}

// TestClassification pins, on each real state store, that the adapter
// reports a lost race as core.ErrVersionConflict and an unreachable sidecar
// as core.ErrUnavailable, never one as the other: kv.Update retries only
// the first.
func TestClassification(t *testing.T) {
	eachStore(t, func(t *testing.T, ctx context.Context, r *daprtest.Replica, s *daprkv.State) {
		key := "_kvtest:" + uuid.NewString()[:8]

		if it, err := s.Get(ctx, key); err != nil || it.Exists() || it.ETag != "" {
			t.Fatalf("missing record: %+v %v", it, err)
		}
		if err := s.Put(ctx, key, []byte(`{"n":1}`), ""); err != nil {
			t.Fatalf("create: %v", err)
		}
		if err := s.Put(ctx, key, []byte(`{"n":2}`), ""); !errors.Is(err, core.ErrVersionConflict) {
			t.Fatalf("second create: %v, want a version conflict", err)
		}
		first, err := s.Get(ctx, key)
		if err != nil || string(first.Value) != `{"n":1}` || first.ETag == "" {
			t.Fatalf("read: %+v %v", first, err)
		}
		if err := s.Put(ctx, key, []byte(`{"n":3}`), first.ETag); err != nil {
			t.Fatalf("guarded write: %v", err)
		}
		if err := s.Put(ctx, key, []byte(`{"n":4}`), first.ETag); !errors.Is(err, core.ErrVersionConflict) {
			t.Fatalf("stale ETag: %v, want a version conflict", err)
		}
		// Lost races are retried by Update, which ends with its change.
		type rec struct{ N int }
		if err := kv.Update(ctx, s, key, func(v *rec) (bool, error) { v.N += 10; return true, nil }); err != nil {
			t.Fatal(err)
		}
		if it, _ := s.Get(ctx, key); string(it.Value) != `{"N":13}` {
			t.Fatalf("after update: %s", it.Value)
		}
		if err := s.Set(ctx, key+":ttl", []byte("1"), time.Hour); err != nil {
			t.Fatalf("set with a ttl: %v", err)
		}
		if has, err := s.Has(ctx, config.DefaultStateStore, "state"); err != nil || !has {
			t.Fatalf("state store component: %v %v", has, err)
		}
		if has, _ := s.Has(ctx, config.DefaultLockStore, "lock"); has {
			res := "kvtest:" + uuid.NewString()[:8]
			if ok, err := s.TryLock(ctx, res, "a", time.Minute); err != nil || !ok {
				t.Fatalf("lock: %v %v", ok, err)
			}
			if ok, err := s.TryLock(ctx, res, "b", time.Minute); err != nil || ok {
				t.Fatalf("second lock: %v %v", ok, err)
			}
			if ok, err := s.Unlock(ctx, res, "b"); err != nil || ok {
				t.Fatalf("unlock by another owner: %v %v", ok, err)
			}
			t.Log("lock component checked")
			if ok, err := s.Unlock(ctx, res, "a"); err != nil || !ok {
				t.Fatalf("unlock: %v %v", ok, err)
			}
		}

		r.StopSidecar()
		dctx, dcancel := context.WithTimeout(ctx, 3*time.Second)
		defer dcancel()
		for _, err := range []error{
			func() error { _, err := s.Get(dctx, key); return err }(),
			func() error { _, err := s.GetMany(dctx, []string{key}); return err }(),
			s.Put(dctx, key, []byte(`{}`), first.ETag),
			s.Transact(dctx, []kv.Write{{Key: key, Value: []byte(`{}`), ETag: first.ETag}}),
		} {
			if !errors.Is(err, core.ErrUnavailable) || errors.Is(err, core.ErrVersionConflict) {
				t.Fatalf("sidecar down: %v, want unavailable", err)
			}
		}
	})
}

// TestTransact holds the adapter to the port's transactions on each real
// state store. Dapr's Redis store cannot roll a transaction back, so there
// Transact must refuse and write nothing rather than write part of it.
func TestTransact(t *testing.T) {
	eachStore(t, func(t *testing.T, ctx context.Context, r *daprtest.Replica, s *daprkv.State) {
		prefix := "_kvtx:" + uuid.NewString()[:8]
		if r.Profile() != "redis" {
			kvtest.Transact(t, ctx, s, prefix)
			return
		}
		err := s.Transact(ctx, []kv.Write{{Key: prefix + ":a", Value: []byte(`{"n":1}`)}})
		if !errors.Is(err, errors.ErrUnsupported) {
			t.Fatalf("transaction on Redis: %v, want it refused", err)
		}
		if it, err := s.Get(ctx, prefix+":a"); err != nil || it.Exists() {
			t.Fatalf("a refused transaction wrote: %+v %v", it, err)
		}
	})
}
