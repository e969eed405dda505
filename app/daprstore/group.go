package daprstore

import (
	"context"
	"time"

	dapr "github.com/dapr/go-sdk/client"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/open-autoglm/autoglm/app/internal/batch"
)

// maxGroup bounds the commits merged into one transaction (and the reads
// merged into one bulk get).
const maxGroup = 64

// txGroup group-commits transactions on a store that admits one writer at
// a time (SQLite). Without it, concurrent commits of different documents
// wait in SQLite's busy handler, which sleeps in growing steps (up to
// 100 ms) and fails with SQLITE_BUSY after busyTimeout, and each commit
// pays its own fsync. Here commits queue while one transaction runs; the
// next transaction carries all that queued (different documents: the
// engine serialises writes to one document), so one fsync serves many
// writes. A commit that finds none running goes at once, on the caller's
// goroutine (batch.Do). If the merged transaction fails, nothing of it was
// written, and each commit runs alone to get its own outcome (an ETag
// conflict stays the conflict of the document that had it).
type txGroup struct {
	batches *batch.Batcher[*txReq]
}

func newTxGroup(c txClient, store string) *txGroup {
	return &txGroup{batches: batch.New(func(group []*txReq) { runTx(c, store, group) }, batch.UpTo[*txReq](maxGroup), 0)}
}

type txReq struct {
	ctx  context.Context
	ops  []*dapr.StateOperation
	done chan error
}

type txClient interface {
	ExecuteStateTransaction(ctx context.Context, storeName string, meta map[string]string, ops []*dapr.StateOperation) error
}

func (g *txGroup) exec(ctx context.Context, ops []*dapr.StateOperation) error {
	r := &txReq{ctx: ctx, ops: ops, done: make(chan error, 1)}
	g.batches.Do(r)
	select {
	case err := <-r.done:
		return err
	case <-ctx.Done():
		// The commit may still be applied; the engine treats this like any
		// ambiguous failure.
		return ctx.Err()
	}
}

// groupContext bounds one group's call to the sidecar. A group of one is
// its caller's call (batch.Do may run it on the caller's goroutine), so it
// ends with the caller's context, as a call made without the group would;
// a merged group serves callers that each stop waiting at their own
// deadline, and runs on.
func groupContext(first context.Context, n int) (context.Context, context.CancelFunc) {
	if n > 1 {
		first = context.Background()
	}
	return context.WithTimeout(first, 30*time.Second)
}

// runTx commits one group: alone, or merged into one transaction and, if
// that fails, each on its own.
func runTx(c txClient, store string, group []*txReq) {
	ctx, cancel := groupContext(group[0].ctx, len(group))
	defer cancel()
	if len(group) == 1 {
		group[0].done <- c.ExecuteStateTransaction(ctx, store, nil, group[0].ops)
		return
	}
	var all []*dapr.StateOperation
	for _, r := range group {
		all = append(all, r.ops...)
	}
	if err := c.ExecuteStateTransaction(ctx, store, nil, all); err == nil {
		for _, r := range group {
			r.done <- nil
		}
		return
	}
	for _, r := range group {
		r.done <- c.ExecuteStateTransaction(ctx, store, nil, r.ops)
	}
}

// loadGroup batches document reads on SQLite the way txGroup batches
// commits: a read that finds none running goes at once, on the caller's
// goroutine (batch.Do); reads that arrive meanwhile wait and go together as
// one bulk get (one query on SQLite), so a replica writing many documents
// makes one round trip to the sidecar for all their reads instead of one
// each.
type loadGroup struct {
	batches *batch.Batcher[*loadReq]
}

func newLoadGroup(c loadClient, store string) *loadGroup {
	return &loadGroup{batches: batch.New(func(group []*loadReq) { runLoad(c, store, group) }, batch.UpTo[*loadReq](maxGroup), 0)}
}

type loadReq struct {
	ctx  context.Context
	key  string
	item *dapr.StateItem
	err  error
	done chan struct{}
}

type loadClient interface {
	GetState(ctx context.Context, storeName, key string, meta map[string]string) (*dapr.StateItem, error)
	GetBulkState(ctx context.Context, storeName string, keys []string, meta map[string]string, parallelism int32) ([]*dapr.BulkStateItem, error)
}

func (g *loadGroup) get(ctx context.Context, key string) (*dapr.StateItem, error) {
	r := &loadReq{ctx: ctx, key: key, done: make(chan struct{})}
	g.batches.Do(r)
	select {
	case <-r.done:
		return r.item, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// runLoad reads one group's keys: one get, or one bulk get for all.
func runLoad(c loadClient, store string, group []*loadReq) {
	ctx, cancel := groupContext(group[0].ctx, len(group))
	defer cancel()
	if len(group) == 1 {
		group[0].item, group[0].err = c.GetState(ctx, store, group[0].key, nil)
		close(group[0].done)
		return
	}
	keys := make([]string, 0, len(group))
	seen := make(map[string]bool, len(group))
	for _, r := range group {
		if !seen[r.key] {
			seen[r.key] = true
			keys = append(keys, r.key)
		}
	}
	items, err := c.GetBulkState(ctx, store, keys, nil, 1)
	byKey := make(map[string]*dapr.BulkStateItem, len(items))
	for _, it := range items {
		byKey[it.Key] = it
	}
	for _, r := range group {
		switch it := byKey[r.key]; {
		case err != nil:
			r.err = err
		case it == nil:
			r.item = &dapr.StateItem{Key: r.key} // not stored
		case it.Error != "":
			r.err = status.Error(codes.Unavailable, "read "+r.key+": "+it.Error)
		default:
			r.item = &dapr.StateItem{Key: it.Key, Value: it.Value, Etag: it.Etag, Metadata: it.Metadata}
		}
		close(r.done)
	}
}
