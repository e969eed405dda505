// Package kvtest checks an adapter of the kv port against the port's
// contract, so every adapter is held to the same outcomes.
package kvtest

import (
	"context"
	"errors"
	"testing"

	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/kv"
)

// Store is what Transact checks.
type Store interface {
	kv.Records
	kv.Transactor
}

// Transact checks kv.Transactor on s: reads of several records, writes of
// several records guarded by their ETags, and that a lost race on any key
// (a stale ETag, or a create of a record that exists) writes nothing, not
// even the writes before it. Keys start with prefix, which must be unique
// to the run on a shared store.
func Transact(t *testing.T, ctx context.Context, s Store, prefix string) {
	t.Helper()
	a, b, c := prefix+":a", prefix+":b", prefix+":c"
	want := func(key, value string) kv.Item {
		t.Helper()
		it, err := s.Get(ctx, key)
		if err != nil {
			t.Fatalf("read %s: %v", key, err)
		}
		if string(it.Value) != value {
			t.Fatalf("%s = %q, want %q", key, it.Value, value)
		}
		return it
	}

	// Creates: an empty ETag writes a record that does not exist.
	if err := s.Transact(ctx, []kv.Write{{Key: a, Value: []byte(`{"n":1}`)}, {Key: b, Value: []byte(`{"n":1}`)}}); err != nil {
		t.Fatalf("create two records: %v", err)
	}
	items, err := s.GetMany(ctx, []string{b, c, a})
	if err != nil {
		t.Fatalf("read three records: %v", err)
	}
	if len(items) != 3 || string(items[0].Value) != `{"n":1}` || items[1].Exists() || items[1].ETag != "" ||
		string(items[2].Value) != `{"n":1}` || items[0].ETag == "" || items[2].ETag == "" {
		t.Fatalf("GetMany(b, c, a) = %+v, want b and a in that order and c missing", items)
	}
	ia, ib := items[2], items[0]
	if got := want(a, `{"n":1}`); got.ETag != ia.ETag {
		t.Fatalf("ETag of a: Get %q, GetMany %q", got.ETag, ia.ETag)
	}

	// Guarded writes of both records with the ETags they were read with.
	if err := s.Transact(ctx, []kv.Write{{Key: a, Value: []byte(`{"n":2}`), ETag: ia.ETag},
		{Key: b, Value: []byte(`{"n":2}`), ETag: ib.ETag}}); err != nil {
		t.Fatalf("guarded write of two records: %v", err)
	}
	ia, ib = want(a, `{"n":2}`), want(b, `{"n":2}`)

	// Another writer changes b: a transaction over a (current) and b
	// (stale) loses the race and leaves a untouched.
	if err := s.Put(ctx, b, []byte(`{"n":3}`), ib.ETag); err != nil {
		t.Fatalf("competing write: %v", err)
	}
	err = s.Transact(ctx, []kv.Write{{Key: a, Value: []byte(`{"n":9}`), ETag: ia.ETag},
		{Key: b, Value: []byte(`{"n":9}`), ETag: ib.ETag}})
	if !errors.Is(err, core.ErrVersionConflict) || errors.Is(err, core.ErrUnavailable) {
		t.Fatalf("stale ETag on the second key: %v, want a version conflict", err)
	}
	if got := want(a, `{"n":2}`); got.ETag != ia.ETag {
		t.Fatalf("a was rewritten by a failed transaction: ETag %q, was %q", got.ETag, ia.ETag)
	}
	want(b, `{"n":3}`)

	// A create of a record that exists loses the race too, and the create
	// beside it is not written.
	err = s.Transact(ctx, []kv.Write{{Key: c, Value: []byte(`{"n":1}`)}, {Key: a, Value: []byte(`{"n":9}`)}})
	if !errors.Is(err, core.ErrVersionConflict) || errors.Is(err, core.ErrUnavailable) {
		t.Fatalf("create of an existing key: %v, want a version conflict", err)
	}
	want(c, "")
	want(a, `{"n":2}`)
}
