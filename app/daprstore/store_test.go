package daprstore_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	dapr "github.com/dapr/go-sdk/client"
	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/open-autoglm/autoglm/app/config"
	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/daprstore"
	"github.com/open-autoglm/autoglm/app/internal/daprrun"
	"github.com/open-autoglm/autoglm/app/internal/daprtest"
	"github.com/open-autoglm/autoglm/app/merge"
)

// eachStore runs f on a replica of every profile, with 30 seconds for
// the test and a document store on the replica's sidecar.
func eachStore(t *testing.T, f func(t *testing.T, ctx context.Context, c dapr.Client, s *daprstore.Store)) {
	daprtest.EachProfile(t, func(t *testing.T, r *daprtest.Replica) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c := r.DaprClient(t)
		f(t, ctx, c, daprstore.New(c, config.DefaultStateStore))
	})
}

func docAt(k core.Key, v int64) *core.Document {
	d := merge.NewDoc()
	d.Data["v"] = float64(v)
	return &core.Document{Key: k, Version: v, State: d, LogStart: 1}
}

func change(k core.Key, v int64) core.Change {
	return core.Change{Doc: k.String(), Version: v, Prev: v - 1}
}

// commitOver commits version v of k on s over st, the state a load
// returned: st's ETag guards the write, st's tail goes to the op log, and
// a document that was not there yet (st.Doc nil) joins the index. It
// returns the document committed.
func commitOver(ctx context.Context, s *daprstore.Store, k core.Key, st core.Stored, v int64) (*core.Document, error) {
	d := docAt(k, v)
	d.Tail = []core.Change{change(k, v)}
	var archive []core.Change
	if st.Doc != nil {
		archive = st.Doc.Tail
	}
	return d, s.Commit(ctx, core.Commit{Key: k, ETag: st.ETag, Doc: d, Changes: d.Tail, Archive: archive, IndexAdd: st.Doc == nil})
}

// TestETagSemantics pins how each real state store reports a lost race, so
// the engine's retry keeps working when a store or Dapr version changes.
func TestETagSemantics(t *testing.T) {
	eachStore(t, func(t *testing.T, ctx context.Context, c dapr.Client, s *daprstore.Store) {
		k := core.Key{Collection: "etag", ID: uuid.NewString()[:8]}
		commit := func(etag string, v int64, prevTail []core.Change) error {
			d := docAt(k, v)
			d.Tail = []core.Change{change(k, v)}
			return s.Commit(ctx, core.Commit{Key: k, ETag: etag, Doc: d, Changes: d.Tail, Archive: prevTail, IndexAdd: v == 1})
		}

		// Create, then a second create of the same key loses.
		if err := commit("", 1, nil); err != nil {
			t.Fatalf("create: %v", err)
		}
		if err := commit("", 1, nil); !errors.Is(err, core.ErrVersionConflict) {
			t.Fatalf("second create: %v, want a version conflict", err)
		}
		st, err := s.Load(ctx, k)
		if err != nil || st.Doc.Version != 1 || st.ETag == "" {
			t.Fatalf("load: %+v %v", st, err)
		}
		stale := st.ETag
		if err := commit(stale, 2, st.Doc.Tail); err != nil {
			t.Fatalf("update: %v", err)
		}
		// A commit with a stale ETag fails as a version conflict and
		// leaves no trace of its version.
		if err := commit(stale, 3, st.Doc.Tail); !errors.Is(err, core.ErrVersionConflict) {
			t.Fatalf("stale commit: %v, want a version conflict", err)
		}
		cs, err := s.Changes(ctx, k, 1, 5)
		if err != nil || len(cs) != 2 || cs[0].Version != 1 || cs[1].Version != 2 {
			t.Fatalf("log after stale write: %v %v", cs, err)
		}
		if st, _ := s.Load(ctx, k); st.Doc.Version != 2 {
			t.Fatalf("document after stale write at version %d", st.Doc.Version)
		}
		// A single save with a stale ETag (gRPC Aborted) classifies the same.
		err = c.SaveStateWithETag(ctx, config.DefaultStateStore, "etag:"+k.ID, []byte(`{}`), stale, nil,
			dapr.WithConcurrency(dapr.StateConcurrencyFirstWrite))
		if err == nil {
			t.Fatal("stale single save succeeded")
		}
		if cerr := daprstore.Classify("save", err); !errors.Is(cerr, core.ErrVersionConflict) {
			t.Fatalf("single save error %v classified as %v", err, cerr)
		}
		// Trims delete the named log entries.
		st, _ = s.Load(ctx, k)
		d := docAt(k, 3)
		d.Tail, d.LogStart = []core.Change{change(k, 3)}, 2
		if err := s.Commit(ctx, core.Commit{Key: k, ETag: st.ETag, Doc: d, Changes: d.Tail, Archive: st.Doc.Tail, TrimFrom: 1, TrimTo: 1}); err != nil {
			t.Fatal(err)
		}
		if cs, _ := s.Changes(ctx, k, 1, 3); len(cs) != 0 {
			t.Fatalf("trimmed entry still read: %v", cs)
		}
		if cs, _ := s.Changes(ctx, k, 2, 3); len(cs) != 2 {
			t.Fatalf("kept entries: %v", cs)
		}
		page, err := s.List(ctx, "etag", "", 100)
		if err != nil || !contains(page.IDs, k.ID) {
			t.Fatalf("index: %v %v", page, err)
		}
	})
}

func contains(ids []string, id string) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}

// TestUnavailable: with the sidecar gone, calls fail as unavailable (a
// retryable 503 for clients), not as internal errors.
func TestUnavailable(t *testing.T) {
	port, err := daprrun.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(fmt.Sprintf("127.0.0.1:%d", port), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	c := dapr.NewClientWithConnection(conn)
	defer c.Close()
	s := daprstore.New(c, config.DefaultStateStore)
	k := core.Key{Collection: "x", ID: "y"}
	_, err = s.Load(context.Background(), k)
	if core.CodeOf(err) != core.CodeUnavailable {
		t.Fatalf("load without sidecar: %v (%s)", err, core.CodeOf(err))
	}
	err = s.Commit(context.Background(), core.Commit{Key: k, Doc: docAt(k, 1)})
	if core.CodeOf(err) != core.CodeUnavailable {
		t.Fatalf("commit without sidecar: %v (%s)", err, core.CodeOf(err))
	}
}

// TestTailOfSeveralCommits reads changes that several commits kept in the
// document's tail, before and after a commit archives them to the log.
func TestTailOfSeveralCommits(t *testing.T) {
	eachStore(t, func(t *testing.T, ctx context.Context, c dapr.Client, s *daprstore.Store) {
		k := core.Key{Collection: "tail", ID: uuid.NewString()[:8]}
		var tail []core.Change
		etag := ""
		for v := int64(1); v <= 5; v++ {
			d := docAt(k, v)
			cm := core.Commit{Key: k, ETag: etag, Doc: d, Changes: []core.Change{change(k, v)}, IndexAdd: v == 1}
			if v == 5 { // the fifth commit archives the four before it
				cm.Archive, tail = tail, nil
			}
			tail = append(tail, change(k, v))
			d.Tail = tail
			if err := s.Commit(ctx, cm); err != nil {
				t.Fatalf("commit v%d: %v", v, err)
			}
			st, err := s.Load(ctx, k)
			if err != nil {
				t.Fatal(err)
			}
			etag = st.ETag
			for from := int64(1); from <= v; from++ {
				cs, err := s.Changes(ctx, k, from, v)
				if err != nil || int64(len(cs)) != v-from+1 {
					t.Fatalf("after v%d: changes %d..%d: %v %v", v, from, v, cs, err)
				}
				for i, ch := range cs {
					if ch.Version != from+int64(i) {
						t.Fatalf("after v%d: changes %d..%d: entry %d is v%d", v, from, v, i, ch.Version)
					}
				}
			}
		}
	})
}
