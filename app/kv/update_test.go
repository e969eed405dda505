package kv_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/inmem"
	"github.com/open-autoglm/autoglm/app/kv"
)

type counter struct {
	N    int      `json:"n"`
	Tags []string `json:"tags,omitempty"`
}

func incr(tag string) func(*counter) (bool, error) {
	return func(c *counter) (bool, error) {
		c.N++
		c.Tags = append(c.Tags, tag)
		return true, nil
	}
}

func read(t *testing.T, s *inmem.State, key string) counter {
	t.Helper()
	var c counter
	if _, err := kv.Load(context.Background(), s, key, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

// A writer that loses a race starts again from the winner's record, so
// neither change is lost.
func TestUpdateLostRace(t *testing.T) {
	ctx := context.Background()
	s := inmem.NewState()
	if err := kv.Update(ctx, s, "k", incr("first")); err != nil {
		t.Fatal(err)
	}
	slipped := false
	s.BeforePut = func(key string) {
		if slipped {
			return
		}
		slipped = true
		// Another replica's write lands between our read and our write.
		if err := kv.Update(ctx, s, key, incr("other")); err != nil {
			t.Error(err)
		}
	}
	runs := 0
	err := kv.Update(ctx, s, "k", func(c *counter) (bool, error) { runs++; return incr("mine")(c) })
	if err != nil {
		t.Fatal(err)
	}
	if runs != 2 {
		t.Fatalf("fn ran %d times, want 2 (the lost race, then the retry)", runs)
	}
	if got := read(t, s, "k"); got.N != 3 || fmt.Sprint(got.Tags) != "[first other mine]" {
		t.Fatalf("record %+v, want all three changes in order", got)
	}
}

// gets counts the reads that reach the in-memory adapter.
type gets struct {
	*inmem.State
	n int
}

func (g *gets) Get(ctx context.Context, key string) (kv.Item, error) {
	g.n++
	return g.State.Get(ctx, key)
}

// An outage is not a lost race: Update returns it at once, without reading
// or writing again, even when the store is back a moment later.
func TestUpdateOutageNotRetried(t *testing.T) {
	ctx := context.Background()
	s := inmem.NewState()
	g := &gets{State: s}
	s.FailPuts = 1 // the store is down for one write only
	puts := 0
	s.BeforePut = func(string) { puts++ }
	runs := 0
	err := kv.Update(ctx, g, "k", func(c *counter) (bool, error) { runs++; return incr("x")(c) })
	if !errors.Is(err, core.ErrUnavailable) || errors.Is(err, core.ErrVersionConflict) {
		t.Fatalf("err = %v, want the outage", err)
	}
	if runs != 1 || puts != 1 || g.n != 1 {
		t.Fatalf("fn ran %d times, Get %d, Put %d; an outage must not be retried", runs, g.n, puts)
	}
}

// Under permanent contention Update gives up after kv.Attempts tries with a
// conflict, instead of spinning.
func TestUpdateBounded(t *testing.T) {
	ctx := context.Background()
	s := inmem.NewState()
	s.BeforePut = func(key string) {
		if err := s.Set(ctx, key, []byte(`{"n":100}`), 0); err != nil {
			t.Error(err)
		}
	}
	runs := 0
	err := kv.Update(ctx, s, "k", func(c *counter) (bool, error) { runs++; return incr("x")(c) })
	if !errors.Is(err, core.ErrVersionConflict) {
		t.Fatalf("err = %v, want a conflict", err)
	}
	if runs != kv.Attempts {
		t.Fatalf("fn ran %d times, want %d", runs, kv.Attempts)
	}
}

// fn returning false or an error leaves the record unwritten.
func TestUpdateNoWrite(t *testing.T) {
	ctx := context.Background()
	s := inmem.NewState()
	if err := kv.Update(ctx, s, "k", incr("a")); err != nil {
		t.Fatal(err)
	}
	before, _ := s.Get(ctx, "k")
	if err := kv.Update(ctx, s, "k", func(c *counter) (bool, error) { c.N = 9; return false, nil }); err != nil {
		t.Fatal(err)
	}
	stop := errors.New("stop")
	if err := kv.Update(ctx, s, "k", func(c *counter) (bool, error) { c.N = 9; return true, stop }); !errors.Is(err, stop) {
		t.Fatalf("err = %v", err)
	}
	after, _ := s.Get(ctx, "k")
	if after.ETag != before.ETag || read(t, s, "k").N != 1 {
		t.Fatal("the record was written")
	}
}

// Concurrent writers each land exactly once.
func TestUpdateConcurrent(t *testing.T) {
	ctx := context.Background()
	s := inmem.NewState()
	const writers = 8
	var wg sync.WaitGroup
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := kv.Update(ctx, s, "k", incr(fmt.Sprint(i))); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if got := read(t, s, "k"); got.N != writers || len(got.Tags) != writers {
		t.Fatalf("record %+v, want %d changes", got, writers)
	}
}

// Put with an empty ETag creates only; with a stale ETag it loses.
func TestPutGuards(t *testing.T) {
	ctx := context.Background()
	s := inmem.NewState()
	if err := s.Put(ctx, "k", []byte(`1`), ""); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, "k", []byte(`2`), ""); !errors.Is(err, core.ErrVersionConflict) {
		t.Fatalf("create over an existing record: %v", err)
	}
	it, _ := s.Get(ctx, "k")
	if err := s.Put(ctx, "k", []byte(`3`), it.ETag); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, "k", []byte(`4`), it.ETag); !errors.Is(err, core.ErrVersionConflict) {
		t.Fatalf("stale ETag: %v", err)
	}
}
