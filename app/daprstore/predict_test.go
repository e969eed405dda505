package daprstore_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dapr "github.com/dapr/go-sdk/client"
	"github.com/google/uuid"

	"github.com/open-autoglm/autoglm/app/config"
	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/daprstore"
	"github.com/open-autoglm/autoglm/app/internal/daprtest"
)

// countingClient is the real sidecar client, counting read round trips
// (single and bulk).
type countingClient struct {
	dapr.Client
	trips atomic.Int64
}

func (c *countingClient) GetState(ctx context.Context, store, key string, meta map[string]string) (*dapr.StateItem, error) {
	c.trips.Add(1)
	return c.Client.GetState(ctx, store, key, meta)
}

func (c *countingClient) GetBulkState(ctx context.Context, store string, keys []string, meta map[string]string, par int32) ([]*dapr.BulkStateItem, error) {
	c.trips.Add(1)
	return c.Client.GetBulkState(ctx, store, keys, meta, par)
}

// countingStore starts a replica of profile and returns it with a document
// store on its sidecar whose read round trips c counts.
func countingStore(t *testing.T, profile string) (*daprtest.Replica, *countingClient, *daprstore.Store) {
	t.Helper()
	r := daprtest.Start(t, daprtest.Options{Profile: profile})
	c := &countingClient{Client: r.DaprClient(t)}
	return r, c, daprstore.New(c, config.DefaultStateStore)
}

// On Redis, a writer's load right after this replica's own commit needs no
// read: the ETag that commit produced is known (Redis counts versions), and
// committing with it succeeds. When another replica wrote in between, the
// foretold ETag is stale and the commit fails as a conflict, never
// overwriting that write.
func TestLoadForWriteAfterCommitOnRedis(t *testing.T) {
	r, c, s := countingStore(t, "redis")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	other := daprstore.New(r.DaprClient(t), config.DefaultStateStore) // another replica
	k := core.Key{Collection: "predict", ID: uuid.NewString()[:8]}

	commit := func(s *daprstore.Store, st core.Stored, v int64) error {
		_, err := commitOver(ctx, s, k, st, v)
		return err
	}
	if err := commit(s, core.Stored{}, 1); err != nil {
		t.Fatal(err)
	}
	for v := int64(2); v <= 4; v++ {
		before := c.trips.Load()
		st, err := s.LoadForWrite(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		if n := c.trips.Load() - before; n != 0 || st.Doc == nil || st.Doc.Version != v-1 {
			t.Fatalf("load for write %d: %d reads, version %v", v, n, st.Doc)
		}
		if err := commit(s, st, v); err != nil {
			t.Fatalf("commit %d with the foretold ETag %q: %v", v, st.ETag, err)
		}
	}
	// Another replica writes version 5 behind s's back.
	st, err := other.Load(ctx, k)
	if err != nil {
		t.Fatal(err)
	}
	if err := commit(other, st, 5); err != nil {
		t.Fatal(err)
	}
	stale, err := s.LoadForWrite(ctx, k)
	if err != nil {
		t.Fatal(err)
	}
	if err := commit(s, stale, 5); !errors.Is(err, core.ErrVersionConflict) {
		t.Fatalf("commit on a stale foretold ETag: %v, want a version conflict", err)
	}
	// The retry reads the document, and the write goes through.
	fresh, err := s.LoadForWrite(ctx, k)
	if err != nil {
		t.Fatal(err)
	}
	if fresh.Doc.Version != 5 {
		t.Fatalf("reload: version %d, want 5", fresh.Doc.Version)
	}
	if err := commit(s, fresh, 6); err != nil {
		t.Fatal(err)
	}
}

// On SQLite, loads of many documents at once share round trips to the
// sidecar, and each still gets its own document and ETag (a missing one
// reads as missing, and the ETag guards the next commit).
func TestConcurrentLoadsShareReadsOnSQLite(t *testing.T) {
	_, c, s := countingStore(t, "local")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const docs = 40
	keys := make([]core.Key, docs)
	for i := range keys {
		keys[i] = core.Key{Collection: "bulk", ID: fmt.Sprintf("d%d-%s", i, uuid.NewString()[:6])}
		if i%4 == 3 {
			continue // never written
		}
		if _, err := commitOver(ctx, s, keys[i], core.Stored{}, int64(i+1)); err != nil {
			t.Fatal(err)
		}
	}
	c.trips.Store(0)
	got := make([]core.Stored, docs)
	var wg sync.WaitGroup
	for i := range keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			if got[i], err = s.Load(ctx, keys[i]); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	for i, st := range got {
		switch {
		case i%4 == 3 && st.Doc != nil:
			t.Fatalf("%s was never written but loads as version %d", keys[i], st.Doc.Version)
		case i%4 != 3 && (st.Doc == nil || st.Doc.Version != int64(i+1) || st.ETag == ""):
			t.Fatalf("%s: loaded %+v", keys[i], st)
		}
	}
	if n := c.trips.Load(); n >= docs {
		t.Fatalf("%d concurrent loads took %d round trips", docs, n)
	}
	t.Logf("%d loads in %d round trips", docs, c.trips.Load())
	// Every ETag read in bulk guards a commit.
	for i, st := range got {
		if st.Doc == nil {
			continue
		}
		if _, err := commitOver(ctx, s, keys[i], st, st.Doc.Version+1); err != nil {
			t.Fatalf("commit on the ETag read in bulk: %v", err)
		}
	}
}
