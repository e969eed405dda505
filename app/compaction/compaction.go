// Package compaction is the background job that keeps every document's op
// log within its window and its stored record small. One replica of a
// cluster runs it at a time, guarded by a lease on a Dapr distributed lock.
//
// For each document in the collection indexes it
//
//   - archives the tail of a quiet document (the changes of its latest
//     commit, kept inside the document until the next commit copies them) to
//     the op-log keys, so the log keys alone hold the whole window and the
//     document shrinks;
//   - trims op-log entries older than the window and moves the document's
//     LogStart up (a client further behind gets the document itself as its
//     snapshot);
//   - moves the idempotency record (Document.Idem) of every client that has
//     had no op applied to the document for ClientAge (7 days) to the
//     document's gone list, which keeps only its floor: a retry of an op of
//     such a client is refused op_expired (never applied again), so ClientAge
//     is the longest a client may wait before retrying and still be answered
//     with its op's version;
//   - drops the tombstones (deleted characters) of a text field whose last
//     delete left the window (merge.CollectText). Every watcher has passed
//     that delete (a client further behind gets a snapshot), and copies that
//     still hold the tombstones show the same text and place later edits the
//     same way. An edit made offline before the delete and anchored to a
//     collected character is appended at the end of the text, never lost.
//
// It writes a document only through a Commit guarded by the ETag it read,
// never blindly; a document that changed meanwhile is skipped until the next
// pass. Everything it writes is correct whatever the order and whether or not
// the guarded write wins (archived changes are committed ones, trims are
// below the window), so correctness never depends on the lease: two holders
// at once (a lease that expired during a long pause) only waste work. The
// lease keeps the work on one replica.
package compaction

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/internal/logs"
	"github.com/open-autoglm/autoglm/app/kv"
	"github.com/open-autoglm/autoglm/app/merge"
)

// Store is what the job reads and writes documents through (daprstore).
type Store interface {
	Load(ctx context.Context, k core.Key) (core.Stored, error)
	Commit(ctx context.Context, c core.Commit) error
	core.Lister
}

// Options configure a Job.
type Options struct {
	Store Store
	// Registry records the collections written in the cluster; nil walks
	// only Declared and what this replica observed.
	Registry *Registry
	// Lock holds the lease; LockStore names its component (for logs).
	// HasLock reports at start whether the sidecar has it; without one the
	// job runs unguarded (single-replica profiles).
	Lock      kv.Locker
	LockStore string
	HasLock   func(ctx context.Context) (bool, error)
	// Resource is the lease's lock id: one lease per cluster.
	Resource string
	// Owner identifies this process as the lease holder; empty: random.
	Owner string

	Interval time.Duration // between passes while holding the lease
	Lease    time.Duration // lease time; renewed every third of it
	Quiet    time.Duration // a document unchanged this long has its tail archived
	Window   int           // op-log entries kept per document (as the engine keeps them)
	// ClientAge: a client with no op applied to a document for this long
	// loses its idempotency record there, keeping only its floor on the
	// gone list (default 7 days).
	ClientAge time.Duration
	// Declared are the collections of the collections config; they are
	// walked even before anything was observed.
	Declared []string

	Log logrus.FieldLogger
	Now func() time.Time
	// OnPass sees the outcome of every pass.
	OnPass func(Stats)
}

// Stats describe one pass.
type Stats struct {
	Collections int // walked
	Documents   int // listed
	Compacted   int // documents written
	Archived    int // tail changes copied to the op-log keys
	Trimmed     int // op-log entries deleted
	Pruned      int // idempotency records of idle clients moved to the gone list
	Collected   int // deleted text characters (tombstones) dropped
	Conflicts   int // documents skipped because they changed meanwhile
	Errors      int
	Duration    time.Duration
}

// Job is the compaction job of one replica.
type Job struct {
	opt Options

	mu      sync.Mutex
	seen    map[string]bool // collections observed by this replica
	pending map[string]bool // observed, not yet in the registry
	wake    chan struct{}

	holding atomic.Bool
	passes  atomic.Int64
}

const (
	pageSize = 100
	// maxTrim bounds the deletes of one commit; a larger backlog (the window
	// was shrunk) is worked off over several passes.
	maxTrim = 1000
	// DefaultClientAge is how long an idle client's idempotency record is
	// kept on a document.
	DefaultClientAge = 7 * 24 * time.Hour
)

// New returns a job; Run starts it.
func New(opt Options) *Job {
	if opt.Interval <= 0 {
		opt.Interval = 5 * time.Minute
	}
	if opt.Lease <= 0 {
		opt.Lease = 30 * time.Second
	}
	if opt.Quiet <= 0 {
		opt.Quiet = time.Minute
	}
	if opt.Window <= 0 {
		opt.Window = 1000
	}
	if opt.ClientAge <= 0 {
		opt.ClientAge = DefaultClientAge
	}
	if opt.Resource == "" {
		opt.Resource = "compaction"
	}
	if opt.Owner == "" {
		opt.Owner = "autoglm"
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	opt.Owner += "/" + hex.EncodeToString(b[:]) // a restarted process is a new owner
	if opt.Log == nil {
		opt.Log = logs.Warnings()
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	return &Job{opt: opt, seen: map[string]bool{}, pending: map[string]bool{}, wake: make(chan struct{}, 1)}
}

// Owner is this process's lease owner id.
func (j *Job) Owner() string { return j.opt.Owner }

// Holding reports whether this replica holds the lease now.
func (j *Job) Holding() bool { return j.holding.Load() }

// Observe notes the collections of committed changes, so the job walks
// collections that no config declares. It never blocks.
func (j *Job) Observe(changes []core.Change) {
	j.mu.Lock()
	defer j.mu.Unlock()
	added := false
	for _, c := range changes {
		coll, _, _ := strings.Cut(c.Doc, "/")
		if coll == "" || j.seen[coll] {
			continue
		}
		j.seen[coll], j.pending[coll] = true, true
		added = true
	}
	if added {
		select {
		case j.wake <- struct{}{}:
		default:
		}
	}
}

// Run works until ctx ends: it records observed collections in the
// registry, and runs a pass every Interval while it holds the lease (or
// always, without a lock component). On return the lease is released.
func (j *Job) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); j.record(ctx) }()
	defer wg.Wait()
	guarded, ok := j.detect(ctx)
	if !ok {
		return
	}
	if !guarded {
		j.opt.Log.WithField("lock_store", j.opt.LockStore).Info("compaction: no lock component; running without a lease (one replica)")
		j.every(ctx)
		return
	}
	j.leased(ctx)
}

// detect asks the sidecar (once it answers) whether the lock component
// exists.
func (j *Job) detect(ctx context.Context) (guarded, ok bool) {
	if j.opt.HasLock == nil {
		return j.opt.Lock != nil, true
	}
	for {
		has, err := j.opt.HasLock(ctx)
		if err == nil {
			return has && j.opt.Lock != nil, true
		}
		if !sleep(ctx, time.Second) {
			return false, false
		}
	}
}

// every runs a pass every Interval, unguarded.
func (j *Job) every(ctx context.Context) {
	for sleep(ctx, j.opt.Interval) {
		j.pass(ctx)
	}
}

func (j *Job) leased(ctx context.Context) {
	poll := max(j.opt.Lease/5, 100*time.Millisecond)
	for ctx.Err() == nil {
		got, err := j.tryLock(ctx)
		if err != nil && ctx.Err() == nil {
			j.opt.Log.WithError(err).Debug("compaction: lease attempt failed")
		}
		if got {
			j.hold(ctx)
			continue
		}
		sleep(ctx, poll)
	}
}

// hold runs passes while the lease is renewed, and releases it when ctx
// ends.
func (j *Job) hold(ctx context.Context) {
	j.holding.Store(true)
	defer j.holding.Store(false)
	log := j.opt.Log.WithFields(logrus.Fields{"owner": j.opt.Owner, "lease": j.opt.Lease.String()})
	log.Info("compaction: lease acquired")
	lctx, lost := context.WithCancel(ctx)
	defer lost()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for sleep(lctx, j.opt.Lease/3) {
			if !j.renew(lctx) {
				if ctx.Err() == nil {
					log.Warn("compaction: lease lost")
				}
				lost()
				return
			}
		}
	}()
	for sleep(lctx, j.opt.Interval) {
		j.pass(lctx)
	}
	lost()
	wg.Wait()
	if ctx.Err() != nil {
		// Shutting down: hand the lease over at once instead of letting it
		// expire.
		rctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, _ = j.opt.Lock.Unlock(rctx, j.opt.Resource, j.opt.Owner)
		log.Info("compaction: lease released")
	}
}

func (j *Job) tryLock(ctx context.Context) (bool, error) {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return j.opt.Lock.TryLock(cctx, j.opt.Resource, j.opt.Owner, j.opt.Lease)
}

// renew extends the lease. The lock API has no renewal: the holder releases
// its own lock and takes it again at once. Another replica can win the
// instant in between; then this one has lost the lease and stops.
func (j *Job) renew(ctx context.Context) bool {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	released, err := j.opt.Lock.Unlock(cctx, j.opt.Resource, j.opt.Owner)
	cancel()
	if err != nil || !released {
		return false // not ours any more, or unknown: let it expire
	}
	got, err := j.tryLock(ctx)
	return err == nil && got
}

// record writes observed collections to the registry, retrying until it
// succeeds.
func (j *Job) record(ctx context.Context) {
	if j.opt.Registry == nil {
		return
	}
	retry := time.Duration(0)
	for {
		var timer <-chan time.Time
		if retry > 0 {
			timer = time.After(retry)
		}
		select {
		case <-ctx.Done():
			return
		case <-j.wake:
		case <-timer:
		}
		j.mu.Lock()
		names := slices.Sorted(maps.Keys(j.pending))
		j.mu.Unlock()
		if len(names) == 0 {
			retry = 0
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := j.opt.Registry.Add(cctx, names)
		cancel()
		if err != nil {
			retry = min(max(2*retry, time.Second), 30*time.Second)
			j.opt.Log.WithError(err).Debug("compaction: recording collections failed")
			continue
		}
		retry = 0
		j.mu.Lock()
		for _, n := range names {
			delete(j.pending, n)
		}
		j.mu.Unlock()
	}
}

// Pass walks every known collection once (exported for tests and tools;
// Run calls it on schedule).
func (j *Job) Pass(ctx context.Context) (Stats, error) {
	start := j.opt.Now()
	var st Stats
	colls, err := j.collections(ctx)
	if err != nil {
		return st, err
	}
	st.Collections = len(colls)
	for _, coll := range colls {
		if err := j.collection(ctx, coll, &st); err != nil {
			st.Errors++
			if ctx.Err() != nil {
				break
			}
			j.opt.Log.WithError(err).WithField("collection", coll).Warn("compaction: collection skipped")
		}
	}
	st.Duration = j.opt.Now().Sub(start)
	return st, ctx.Err()
}

func (j *Job) pass(ctx context.Context) {
	st, err := j.Pass(ctx)
	j.passes.Add(1)
	log := j.opt.Log.WithFields(logrus.Fields{
		"collections": st.Collections, "documents": st.Documents, "compacted": st.Compacted,
		"archived": st.Archived, "trimmed": st.Trimmed, "pruned": st.Pruned,
		"conflicts": st.Conflicts, "errors": st.Errors, "took": st.Duration.Round(time.Millisecond).String(),
	})
	switch {
	case err != nil && ctx.Err() == nil:
		log.WithError(err).Warn("compaction pass failed")
	case st.Compacted > 0 || st.Errors > 0:
		log.Info("compaction pass")
	default:
		log.Debug("compaction pass")
	}
	if j.opt.OnPass != nil {
		j.opt.OnPass(st)
	}
}

func (j *Job) collections(ctx context.Context) ([]string, error) {
	set := map[string]bool{}
	for _, c := range j.opt.Declared {
		set[c] = true
	}
	j.mu.Lock()
	for c := range j.seen {
		set[c] = true
	}
	j.mu.Unlock()
	if j.opt.Registry != nil {
		names, err := j.opt.Registry.Load(ctx)
		if err != nil {
			return nil, err
		}
		for _, c := range names {
			set[c] = true
		}
	}
	return slices.Sorted(maps.Keys(set)), nil
}

func (j *Job) collection(ctx context.Context, coll string, st *Stats) error {
	for cursor := ""; ; {
		if err := ctx.Err(); err != nil {
			return err
		}
		page, err := j.opt.Store.List(ctx, coll, cursor, pageSize)
		if err != nil {
			return err
		}
		docs, err := j.opt.Store.Documents(ctx, coll, page.IDs)
		if err != nil {
			return err
		}
		st.Documents += len(docs)
		for _, d := range docs {
			if j.plan(d).none() {
				continue
			}
			if err := j.compact(ctx, d.Key, st); err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				st.Errors++
				j.opt.Log.WithError(err).WithField("doc", d.Key.String()).Warn("compaction: document skipped")
			}
		}
		if page.Next == "" {
			return nil
		}
		cursor = page.Next
	}
}

// plan is the work one document needs.
type plan struct {
	archive  bool
	logStart int64 // the new LogStart (≥ the current one)
	trimTo   int64 // delete op-log entries LogStart..trimTo (0: none)
	prune    []string
	collect  bool // text tombstones below logStart
}

func (p plan) none() bool { return !p.archive && p.trimTo == 0 && len(p.prune) == 0 && !p.collect }

func (j *Job) plan(d *core.Document) plan {
	var p plan
	if d == nil || d.Version == 0 {
		return p
	}
	start := max(d.LogStart, 1)
	p.logStart = start
	if want := d.Version - int64(j.opt.Window) + 1; want > start {
		p.trimTo = min(want-1, start+maxTrim-1)
		p.logStart = p.trimTo + 1
	}
	quiet := j.opt.Now().Sub(time.UnixMilli(d.Updated.Wall)) >= j.opt.Quiet
	p.archive = len(d.Tail) > 0 && quiet
	idle := j.opt.Now().Add(-j.opt.ClientAge).UnixMilli()
	for id, c := range d.Idem {
		if c.Last < idle {
			p.prune = append(p.prune, id)
		}
	}
	p.collect = d.State != nil && merge.TextGarbage(d.State, p.logStart)
	return p
}

// compact re-reads the document with its ETag and writes the planned work
// in one guarded commit; a document that changed meanwhile is skipped.
func (j *Job) compact(ctx context.Context, k core.Key, st *Stats) error {
	stored, err := j.opt.Store.Load(ctx, k)
	if err != nil {
		return err
	}
	if stored.Doc == nil || stored.ETag == "" {
		return nil
	}
	p := j.plan(stored.Doc)
	if p.none() {
		return nil
	}
	doc := *stored.Doc
	doc.Key = k
	c := core.Commit{Key: k, ETag: stored.ETag, Doc: &doc}
	if p.archive {
		c.Archive = stored.Doc.Tail
		doc.Tail = nil
	}
	if p.trimTo > 0 {
		c.TrimFrom, c.TrimTo = max(stored.Doc.LogStart, 1), p.trimTo
		doc.LogStart = p.logStart
	}
	if len(p.prune) > 0 {
		doc.Idem = maps.Clone(stored.Doc.Idem)
		doc.ForgetClients(p.prune)
	}
	collected := 0
	if p.collect {
		doc.State = stored.Doc.State.Clone()
		collected = merge.CollectText(doc.State, p.logStart)
	}
	if err := j.opt.Store.Commit(ctx, c); err != nil {
		if errors.Is(err, core.ErrVersionConflict) {
			st.Conflicts++
			return nil
		}
		return err
	}
	st.Compacted++
	if p.archive {
		for _, ch := range c.Archive {
			if ch.Version >= doc.LogStart {
				st.Archived++
			}
		}
	}
	if p.trimTo > 0 {
		st.Trimmed += int(c.TrimTo - c.TrimFrom + 1)
	}
	st.Pruned += len(p.prune)
	st.Collected += collected
	return nil
}

// sleep waits d or until ctx ends; it reports whether ctx is still live.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
