// Package engine is the coordination layer: it validates and merges client
// operations, assigns version stamps, persists documents with their op log
// through the Store port, and hands committed changes to local sessions and
// to the broadcast Bus.
//
// Writes to one document are serialised inside a replica by a per-document
// writer; ops that queue up behind an in-flight write are coalesced into the
// next transaction. ETag conflicts therefore only happen between replicas,
// and are resolved by reloading and re-applying the batch.
//
// Commit observers (Options.Observers, each named) see the changes of every
// commit this engine makes and of no other: each commit is observed once in
// the cluster, on the replica that made it. They see it after it is durable
// and after its ops were acknowledged, before it is broadcast, in version
// order per document, on the document's writer (so they must not block).
// A replica that stops between a commit and its observers leaves that
// commit unobserved: an observer that must not miss one keeps its own
// cursor and reads the op log (webhooks and events do). Changes committed by
// other replicas reach the hub's observers instead (package hub).
package engine

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/open-autoglm/autoglm/app/clock"
	"github.com/open-autoglm/autoglm/app/collections"
	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/internal/batch"
	"github.com/open-autoglm/autoglm/app/internal/logs"
	"github.com/open-autoglm/autoglm/app/merge"
)

// WriteLoader is a Store that can load a document for a guarded write more
// cheaply than for a read: what it returns may be stale only in ways the
// commit's ETag check refuses (a conflict, after which the engine reloads
// with Load).
type WriteLoader interface {
	LoadForWrite(ctx context.Context, k core.Key) (core.Stored, error)
}

// Result is the outcome of one submitted op.
type Result struct {
	Key     core.Key
	OpID    uint64
	Version int64           // version the op produced (or produced earlier, for a duplicate)
	Change  *core.Change    // the committed change; nil for duplicates and rejections
	Dup     bool            // a retry of an op that was already applied
	Err     error           // rejection; nothing was written for this op
	Ops     []merge.FieldOp // effective ops (what changed)
}

// Options configure an Engine.
type Options struct {
	Store core.Store
	Bus   core.Bus // may be nil (no broadcast)
	Clock *clock.Clock
	// Collections gives each collection's policy, limits and rules; nil
	// serves every collection as lww with the default limits.
	Collections *collections.Config
	Local       func([]core.Change) // local fast path (the hub); may be nil
	// LocalContext, when set, is the local fast path instead of Local, with
	// the commit's span in ctx (the delivery on this replica is its child).
	LocalContext func(ctx context.Context, changes []core.Change)
	LogWindow    int // op-log entries kept per document
	Retries      int // ETag-conflict retries per batch
	MaxBatch     int // ops coalesced into one transaction
	MaxOps       int // field ops per op (a collection may set less)
	MaxDoc       int // encoded document size limit (a collection may set less)
	// Authorize, if set, decides whether op may write a document of coll
	// given its data: called with the data before the op (nil for a new
	// document) and again with the data the op would leave. An error
	// refuses the op.
	Authorize func(op core.Op, coll string, data map[string]any) error
	Log       logrus.FieldLogger
	Metrics   Metrics
	// Tracer, when set, records each batch commit as a span (a child of
	// the first traced op in it, linked to the others); the broadcast
	// carries the commit span's context to the other replicas.
	Tracer trace.Tracer
	// Observers see every commit made here, once, after Local (see the
	// package comment).
	Observers []Observer
}

// Metrics receives counters; nil fields are ignored.
type Metrics struct {
	Accepted  func(n int)
	Rejected  func(code core.Code)
	Conflicts func() // ETag conflicts (another replica won)
	Batch     func(size int)
	// PublishFailed counts committed changes whose broadcast failed.
	PublishFailed func()
	// Committed sees how long a batch took from the start of its first
	// load to durable (retries included).
	Committed func(time.Duration)
}

// Engine accepts ops for documents. It is safe for concurrent use.
type Engine struct {
	opt Options

	mu      sync.Mutex
	writers map[core.Key]*writer
	closed  bool
	active  sync.WaitGroup

	// Commits waiting for their broadcast, sent a message at a time.
	broadcasts *batch.Batcher[pubItem]
}

// New returns an Engine.
func New(opt Options) *Engine {
	if opt.LogWindow <= 0 {
		opt.LogWindow = 1000
	}
	if opt.MaxBatch <= 0 {
		opt.MaxBatch = 256
	}
	if opt.MaxOps <= 0 {
		opt.MaxOps = 256
	}
	if opt.MaxDoc <= 0 {
		opt.MaxDoc = 1 << 20
	}
	if opt.Collections == nil {
		opt.Collections = collections.Default()
	}
	if opt.Log == nil {
		opt.Log = logs.Warnings()
	}
	e := &Engine{opt: opt, writers: map[core.Key]*writer{}}
	e.broadcasts = batch.New(e.send, nextPublish, maxPublishing)
	return e
}

type request struct {
	op    core.Op
	done  func(Result)
	trace trace.SpanContext // the caller's span, parent of the commit span
}

type writer struct {
	key     core.Key
	pending []request
}

// Submit queues op for k and calls done exactly once with the outcome, from
// another goroutine, after the op is durably stored or rejected. done must
// not block.
func (e *Engine) Submit(k core.Key, op core.Op, done func(Result)) {
	e.submit(k, op, trace.SpanContext{}, done)
}

// SubmitContext is Submit for an op traced by the span in ctx: the batch
// commit that stores it is a child of that span.
func (e *Engine) SubmitContext(ctx context.Context, k core.Key, op core.Op, done func(Result)) {
	e.submit(k, op, trace.SpanContextFromContext(ctx), done)
}

func (e *Engine) submit(k core.Key, op core.Op, parent trace.SpanContext, done func(Result)) {
	if err := e.check(k, op); err != nil {
		done(Result{Key: k, OpID: op.OpID, Err: err})
		return
	}
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		done(Result{Key: k, OpID: op.OpID, Err: core.ErrShuttingDown})
		return
	}
	w, ok := e.writers[k]
	if !ok {
		w = &writer{key: k}
		e.writers[k] = w
		e.active.Add(1)
		go e.run(w)
	}
	w.pending = append(w.pending, request{op: op, done: done, trace: parent})
	e.mu.Unlock()
}

// Pending returns the number of ops queued behind in-flight transactions.
func (e *Engine) Pending() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, w := range e.writers {
		n += len(w.pending)
	}
	return n
}

// Do submits op and waits for its outcome. The span in ctx, if any, is the
// parent of the commit span.
func (e *Engine) Do(ctx context.Context, k core.Key, op core.Op) (Result, error) {
	ch := make(chan Result, 1)
	e.submit(k, op, trace.SpanContextFromContext(ctx), func(r Result) { ch <- r })
	select {
	case r := <-ch:
		return r, r.Err
	case <-ctx.Done():
		// The op may still be applied; a retry with the same op id is safe.
		return Result{}, fmt.Errorf("%w: %v", core.ErrUnavailable, ctx.Err())
	}
}

// Close stops accepting ops and waits until every queued op is stored or
// rejected, or ctx ends.
func (e *Engine) Close(ctx context.Context) error {
	e.mu.Lock()
	e.closed = true
	e.mu.Unlock()
	done := make(chan struct{})
	go func() { e.active.Wait(); e.broadcasts.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (e *Engine) maxOps(col *collections.Collection) int {
	if col.Limits.MaxOps > 0 {
		return min(col.Limits.MaxOps, e.opt.MaxOps)
	}
	return e.opt.MaxOps
}

func (e *Engine) maxDoc(col *collections.Collection) int {
	if col.Limits.MaxDocBytes > 0 {
		return min(col.Limits.MaxDocBytes, e.opt.MaxDoc)
	}
	return e.opt.MaxDoc
}

func (e *Engine) check(k core.Key, op core.Op) error {
	col, declared := e.opt.Collections.Collection(k.Collection)
	if !declared && !e.opt.Collections.AllowUnknown {
		return core.Errorf(core.CodeNotFound, "collection %q is not served", k.Collection)
	}
	if limit := e.maxOps(col); len(op.Ops) > limit {
		return core.Errorf(core.CodeTooLarge, "%d field ops in one op (limit %d)", len(op.Ops), limit)
	}
	if len(op.Ops) == 0 && !op.Delete && !op.Replace {
		return core.Errorf(core.CodeInvalidOp, "op has no field operations")
	}
	for _, f := range op.Ops {
		if err := f.Validate(); err != nil {
			return err
		}
	}
	if op.Base < 0 {
		return core.Errorf(core.CodeInvalidOp, "base version %d is negative", op.Base)
	}
	return nil
}

// run drains w's queue batch by batch and exits when it is empty.
func (e *Engine) run(w *writer) {
	defer e.active.Done()
	for {
		e.mu.Lock()
		n := min(len(w.pending), e.opt.MaxBatch)
		if n == 0 {
			delete(e.writers, w.key)
			e.mu.Unlock()
			return
		}
		batch := w.pending[:n:n]
		w.pending = w.pending[n:]
		e.mu.Unlock()
		e.process(w, batch)
	}
}

func (e *Engine) process(w *writer, batch []request) {
	k := w.key
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if e.opt.Metrics.Batch != nil {
		e.opt.Metrics.Batch(len(batch))
	}
	started := time.Now()
	var (
		outs    []Result
		commit  core.Commit
		changes []core.Change
		err     error
		attempt int
		// lostRace: the last attempt, too, lost an ETag race.
		lostRace bool
	)
	if e.opt.Tracer != nil {
		var span trace.Span
		ctx, span = e.startCommit(ctx, k, batch)
		defer func() { endCommit(span, len(batch), len(changes), attempt, lostRace, err) }()
	}
	for ; ; attempt++ {
		var stored core.Stored
		if wl, ok := e.opt.Store.(WriteLoader); ok && attempt == 0 {
			stored, err = wl.LoadForWrite(ctx, k)
		} else {
			stored, err = e.opt.Store.Load(ctx, k)
		}
		if err != nil {
			break
		}
		outs, commit = e.apply(k, stored, batch, false)
		if len(commit.Changes) > 0 {
			// The stored form, encoded once: its state's size is checked
			// here, and the store writes the same bytes. An encoding error
			// leaves Body nil, for the store to report.
			var size int
			commit.Body, size, _ = core.EncodeDocumentSized(commit.Doc)
			if size > e.maxDoc(e.collection(k)) {
				// Some op pushed the document over its limit: apply the
				// batch again checking the size after every op, to refuse
				// just those.
				if stored, err = e.opt.Store.Load(ctx, k); err != nil {
					break
				}
				outs, commit = e.apply(k, stored, batch, true)
			}
		}
		changes = commit.Changes
		if len(changes) == 0 {
			break
		}
		err = e.opt.Store.Commit(ctx, commit)
		if err == nil || !errors.Is(err, core.ErrVersionConflict) || attempt >= e.opt.Retries {
			break
		}
		if e.opt.Metrics.Conflicts != nil {
			e.opt.Metrics.Conflicts()
		}
		// Another replica won the race: back off briefly with jitter, reload
		// and re-apply the whole batch.
		time.Sleep(time.Duration(rand.Int64N(int64(time.Millisecond) << min(attempt, 6))))
	}
	if err != nil {
		e.opt.Log.WithError(err).WithField("doc", k.String()).Warn("write failed")
		if lostRace = errors.Is(err, core.ErrVersionConflict); lostRace {
			// Lost every race to other replicas: nothing was written, and the
			// same op (same op id) will most likely go through on a retry.
			err = core.Errorf(core.CodeUnavailable, "document %s is busy with concurrent writers; retry", k)
		}
		for _, r := range batch {
			e.finish(r, Result{Key: k, OpID: r.op.OpID, Err: err})
		}
		return
	}
	if len(changes) > 0 && e.opt.Metrics.Committed != nil {
		e.opt.Metrics.Committed(time.Since(started))
	}
	// Durable: acknowledge first, so an author sees its ack before any echo,
	// then deliver locally and broadcast to the other replicas.
	for i, r := range batch {
		e.finish(r, outs[i])
	}
	if len(changes) == 0 {
		return
	}
	if e.opt.Metrics.Accepted != nil {
		e.opt.Metrics.Accepted(len(changes))
	}
	e.observe(ctx, changes)
	if e.opt.Bus != nil {
		e.publish(k, changes, trace.SpanContextFromContext(ctx))
	}
}

// startCommit starts the span of a batch commit: a child of the first
// traced op of the batch, linked to the other traced ones.
func (e *Engine) startCommit(ctx context.Context, k core.Key, batch []request) (context.Context, trace.Span) {
	var parent trace.SpanContext
	var links []trace.Link
	for _, r := range batch {
		switch {
		case !r.trace.IsValid():
		case !parent.IsValid():
			parent = r.trace
		case !r.trace.Equal(parent):
			links = append(links, trace.Link{SpanContext: r.trace})
		}
	}
	if parent.IsValid() {
		ctx = trace.ContextWithRemoteSpanContext(ctx, parent)
	}
	return e.opt.Tracer.Start(ctx, "commit "+k.Collection, trace.WithLinks(links...),
		trace.WithAttributes(attribute.String("autoglm.doc", k.String())))
}

// endCommit records a batch's outcome on its span and ends it.
func endCommit(span trace.Span, size, changes, retries int, lostRace bool, err error) {
	conflicts := retries // every retry follows an ETag conflict with another replica
	if lostRace {
		conflicts++
	}
	span.SetAttributes(
		attribute.Int("autoglm.batch.size", size),
		attribute.Int("autoglm.batch.changes", changes),
		attribute.Int("autoglm.commit.retries", retries),
		attribute.Int("autoglm.commit.etag_conflicts", conflicts))
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, string(core.CodeOf(err)))
	}
	span.End()
}

// maxPublishing bounds the commits waiting for their broadcast. The
// broadcast is a hint, so a slow or stalled broker must not hold up writes:
// past this bound a commit's broadcast is dropped, and the other replicas
// repair from the op log (anti-entropy) as they do for a lost message.
const maxPublishing = 4096

// One broadcast message carries at most maxPublishBatch commits and about
// maxPublishBytes of changes (the smallest common message limit of the
// brokers is NATS's 1 MB).
const (
	maxPublishBatch = 256
	maxPublishBytes = 256 << 10
)

// pubItem is one commit waiting for its broadcast.
type pubItem struct {
	key     core.Key
	changes []core.Change
	span    trace.SpanContext // the commit's span; invalid when untraced
	size    int               // estimated encoded size of changes
}

// publish queues a commit's changes for broadcast without making the
// writer wait. One broadcast is in flight at a time; the commits of every
// document that are committed meanwhile leave together in the next
// message, in commit order, so each document's broadcasts stay in order
// and a busy replica sends (and every replica receives) one message per
// round trip rather than one per commit.
func (e *Engine) publish(k core.Key, changes []core.Change, commit trace.SpanContext) {
	if !e.broadcasts.Add(pubItem{key: k, changes: changes, span: commit, size: changesSize(changes)}) {
		e.publishFailed(k, errors.New("too many broadcasts waiting"))
	}
}

// nextPublish returns how many of the queued commits the next message
// carries: at least one, within the message bounds, and commits of at most
// one trace, so that every receipt stays a child of the commit it carries.
func nextPublish(q []pubItem) int {
	if len(q) == 0 {
		return 0
	}
	span, size := q[0].span, q[0].size
	n := 1
	for ; n < len(q) && n < maxPublishBatch; n++ {
		it := q[n]
		if size+it.size > maxPublishBytes {
			break
		}
		if it.span.IsValid() {
			if span.IsValid() && !span.Equal(it.span) {
				break
			}
			span = it.span
		}
		size += it.size
	}
	return n
}

// send publishes one message with the changes of batch.
func (e *Engine) send(batch []pubItem) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var changes []core.Change
	if len(batch) == 1 {
		changes = batch[0].changes
	}
	for _, it := range batch {
		if it.span.IsValid() {
			ctx = trace.ContextWithSpanContext(ctx, it.span)
		}
		if len(batch) > 1 {
			changes = append(changes, it.changes...)
		}
	}
	if err := e.opt.Bus.Publish(ctx, changes); err != nil {
		for _, it := range batch {
			e.publishFailed(it.key, err)
		}
	}
}

// changesSize estimates the encoded size of changes.
func changesSize(changes []core.Change) int {
	n := 0
	for _, c := range changes {
		n += 160 + len(c.Doc) + len(c.Author)
		for _, o := range c.Ops {
			n += 24 + len(o.Path) + len(o.Value)
		}
	}
	return n
}

// publishFailed records a commit that was not broadcast; other replicas
// repair the gap from the op log when the next change (or the anti-entropy
// check) comes.
func (e *Engine) publishFailed(k core.Key, err error) {
	if e.opt.Metrics.PublishFailed != nil {
		e.opt.Metrics.PublishFailed()
	}
	e.opt.Log.WithError(err).WithField("doc", k.String()).Warn("broadcast failed")
}

func (e *Engine) finish(r request, res Result) {
	if res.Err != nil && e.opt.Metrics.Rejected != nil {
		e.opt.Metrics.Rejected(core.CodeOf(res.Err))
	}
	r.done(res)
}

// apply runs the batch against a copy of the stored document and returns
// each request's outcome and the commit that makes the accepted ones durable.
func (e *Engine) collection(k core.Key) *collections.Collection {
	col, _ := e.opt.Collections.Collection(k.Collection)
	return col
}

// apply runs the batch against the stored document. Checking the encoded
// size after every op costs a full encode per op, so it is done only when
// sizeEach is set (the batch as a whole went over the limit).
func (e *Engine) apply(k core.Key, stored core.Stored, batch []request, sizeEach bool) ([]Result, core.Commit) {
	doc := cloneDoc(k, stored.Doc)
	existed := stored.Doc != nil && stored.Doc.Exists()
	col, _ := e.opt.Collections.Collection(k.Collection)
	outs := make([]Result, len(batch))
	var changes []core.Change
	for i, r := range batch {
		outs[i] = e.applyOne(col, doc, r.op, &changes, sizeEach)
		outs[i].Key = k
		outs[i].OpID = r.op.OpID
	}
	c := core.Commit{Key: k, ETag: stored.ETag, Doc: doc, Changes: changes}
	if len(changes) == 0 {
		return outs, c
	}
	core.BoundIdem(doc)
	c.IndexAdd = !existed && doc.Exists()
	c.IndexRemove = existed && !doc.Exists()
	if doc.LogStart == 0 {
		doc.LogStart = 1
	}
	var tail []core.Change
	if stored.Doc != nil {
		tail = stored.Doc.Tail
	}
	if e.tailHasRoom(tail, changes) {
		// The tail keeps the recent changes, so this commit is the
		// document write alone: no op-log keys to write or delete.
		doc.Tail = append(slices.Clip(tail), changes...)
		return outs, c
	}
	c.Archive = tail
	doc.Tail = changes
	// Keep the last LogWindow versions. Trimming is computed from the version
	// read, not the one written, so it only ever deletes entries that are
	// outside the window whether or not this commit wins. It goes with the
	// archive, so the log keys are written and deleted by the same commits.
	if start := stored.Version() - int64(e.opt.LogWindow) + 1; start > doc.LogStart {
		c.TrimFrom, c.TrimTo = doc.LogStart, start-1
		doc.LogStart = start
	}
	return outs, c
}

// Tail bounds: how many changes, and how many estimated encoded bytes
// (changesSize), the document's tail may hold before a commit archives it
// to the op-log keys.
const (
	tailChanges = 8
	tailBytes   = 2048
)

// tailHasRoom reports whether the changes of a commit can join the
// document's tail instead of archiving it. The tail is written with the
// document on every commit, so it is kept small: a commit that archives
// writes its op-log keys and trims the log in the same store call as the
// document, and keeping the recent changes in the tail lets most commits
// skip those writes (on Redis, a second call to the store). A tail never
// holds more than a quarter of the log window.
func (e *Engine) tailHasRoom(tail, changes []core.Change) bool {
	if len(tail) == 0 {
		return false // nothing to archive: the commit writes no log keys anyway
	}
	n := len(tail) + len(changes)
	return n <= min(tailChanges, e.opt.LogWindow/4) && changesSize(tail)+changesSize(changes) <= tailBytes
}

func (e *Engine) applyOne(col *collections.Collection, doc *core.Document, op core.Op, changes *[]core.Change, sizeEach bool) Result {
	var digest uint64
	if op.ClientID != "" && op.OpID != 0 {
		digest = core.OpDigest(op)
		rec := doc.IdemRecord(op.ClientID)
		if rec == nil && doc.BeyondHorizon(op) {
			return reject(core.CodeOpExpired, map[string]any{"horizon": doc.Horizon}, "document %s no longer remembers every client that wrote before version %d, so whether op id %d of client %q was applied is not known: resend it with a base version (or If-Match) of at least %d", doc.Key, doc.Horizon, op.OpID, op.ClientID, doc.Horizon)
		}
		if r, ok := rec.Find(op.OpID); ok {
			if r.Digest != 0 && r.Digest != digest {
				return reject(core.CodeOpIDReused, nil, "op id %d of client %q was used for an op with other content", op.OpID, op.ClientID)
			}
			return Result{Version: r.Version, Dup: true}
		}
		if rec.Expired(op.OpID) {
			return reject(core.CodeOpExpired, nil, "op id %d of client %q is older than the retry window of %s: whether it was applied is not known", op.OpID, op.ClientID, doc.Key)
		}
	}
	switch {
	case op.IfVersion == -1 && doc.Exists():
		return reject(core.CodePreconditionFailed, map[string]any{"current": doc.Version}, "document already exists at version %d", doc.Version)
	case op.IfVersion > 0 && op.IfVersion != doc.Version:
		return reject(core.CodePreconditionFailed, map[string]any{"current": doc.Version}, "document is at version %d, not %d", doc.Version, op.IfVersion)
	case op.Base > doc.Version:
		return reject(core.CodeConflict, map[string]any{"base": op.Base, "current": doc.Version}, "base version %d is ahead of the document (version %d); resync", op.Base, doc.Version)
	}
	ts, err := e.stamp(op.HLC)
	if err != nil {
		return Result{Err: err}
	}
	ch := core.Change{
		Doc: doc.Key.String(), Version: doc.Version + 1, Prev: doc.Version,
		Author: op.ClientID, OpID: op.OpID, HLC: ts,
	}
	ruled := len(col.Fields) > 0 || len(col.StateMachines) > 0
	if e.opt.Authorize != nil {
		var data map[string]any
		if doc.Exists() {
			data = doc.State.Data
		}
		if err := e.opt.Authorize(op, col.Name, data); err != nil {
			return Result{Err: err}
		}
	}
	switch {
	case op.Delete:
		if !doc.Exists() {
			return reject(core.CodeNotFound, nil, "document %s does not exist", doc.Key)
		}
		doc.State = merge.NewDoc()
		doc.Deleted = true
		ch.Deleted = true
	default:
		created := !doc.Exists()
		if created {
			doc.State = merge.NewDoc()
		}
		state := doc.State
		var before map[string]any
		if ruled && !created {
			before = col.Snapshot(state.Data)
		}
		ops := op.Ops
		if op.Replace && !created {
			ops = replaceOps(state.Data, ops)
		}
		// Applied in place; undone if a rule or a limit refuses the result.
		eff, undo, err := merge.ApplyUndo(col.Policy, state, merge.Input{
			Client: op.ClientID, HLC: ts, Base: baseOf(col.Policy, op, doc.Version), Current: doc.Version, Ops: ops,
			Text: col.TextFields(),
		})
		if err != nil {
			if created {
				doc.State = merge.NewDoc()
			}
			return Result{Err: err}
		}
		if ruled {
			if err := col.Check(before, state.Data, op.Roles); err != nil {
				undo()
				return Result{Err: err}
			}
		}
		if e.opt.Authorize != nil {
			if err := e.opt.Authorize(op, col.Name, state.Data); err != nil {
				undo()
				return Result{Err: err}
			}
		}
		if sizeEach {
			if size, limit := core.StateSize(state), e.maxDoc(col); size > limit {
				undo()
				return reject(core.CodeTooLarge, nil, "document would be %d bytes (limit %d)", size, limit)
			}
		}
		doc.Deleted = false
		ch.Ops = eff
		ch.Created = created
	}
	doc.Version = ch.Version
	doc.Updated = ts
	if digest != 0 {
		doc.Remember(op.ClientID, core.OpRecord{OpID: op.OpID, Version: ch.Version, Digest: digest}, e.opt.Clock.Now().Wall)
	}
	*changes = append(*changes, ch)
	return Result{Version: ch.Version, Change: &ch, Ops: ch.Ops}
}

// baseOf is the version op is based on. An op without a base is based on
// the document as it is (it claims no concurrent edit), except where a base
// is required: strict refuses it unless it creates the document, and a
// resolve must have seen every candidate it settles.
func baseOf(p merge.Policy, op core.Op, current int64) int64 {
	if !op.NoBase || p == merge.Strict {
		return op.Base
	}
	for _, f := range op.Ops {
		if f.Op == merge.KindResolve {
			return op.Base
		}
	}
	return current
}

// replaceOps adds an unset for every top-level field of data that ops do not
// set, turning a set of fields into a whole-document replacement.
func replaceOps(data map[string]any, ops []merge.FieldOp) []merge.FieldOp {
	set := make(map[string]bool, len(ops))
	for _, o := range ops {
		set[o.Path] = true
	}
	out := slices.Clone(ops)
	keys := slices.Sorted(maps.Keys(data))
	for _, k := range keys {
		if !set[k] && merge.ValidatePath(k) == nil {
			out = append(out, merge.FieldOp{Op: merge.KindUnset, Path: k})
		}
	}
	return out
}

// Load reads a document as stored.
func (e *Engine) Load(ctx context.Context, k core.Key) (core.Stored, error) {
	return e.opt.Store.Load(ctx, k)
}

// Changes reads logged changes from..to.
func (e *Engine) Changes(ctx context.Context, k core.Key, from, to int64) ([]core.Change, error) {
	return e.opt.Store.Changes(ctx, k, from, to)
}

func reject(code core.Code, details any, format string, args ...any) Result {
	e := core.Errorf(code, format, args...)
	e.Details = details
	return Result{Err: e}
}

// stamp merges a client's HLC into the replica clock (refusing stamps too far
// in the future) or stamps an unstamped op with the replica clock. The
// client's own stamp is what the merge policies compare, so offline edits keep
// their original time.
func (e *Engine) stamp(ts clock.Timestamp) (clock.Timestamp, error) {
	if ts.IsZero() {
		return e.opt.Clock.Now(), nil
	}
	if _, err := e.opt.Clock.Update(ts); err != nil {
		return clock.Timestamp{}, err
	}
	return ts, nil
}

func cloneDoc(k core.Key, d *core.Document) *core.Document {
	if d == nil {
		return &core.Document{Key: k, State: merge.NewDoc()}
	}
	c := *d
	c.Key = k
	if c.State == nil {
		c.State = merge.NewDoc()
	}
	c.Tail = nil
	// The records themselves are never changed in place (ClientOps.With).
	c.Idem = maps.Clone(d.Idem)
	return &c
}
