// Package daprstore implements core.Store over the Dapr state API.
//
// Key layout (':' separates parts; ids may not contain it):
//
//	<coll>:<id>             the document with its latest commit's changes (tail), guarded by its ETag
//	<coll>:<id>:log:<v>     the change that produced version v (dense, the last K kept)
//	<coll>:_index:<shard>   sorted ids of the collection's live documents, in 64 shards
//
// A commit's changes are written inside the document, by the one guarded
// write, so a reader never sees a version without its change; the next
// commit copies them to the log keys. Reading versions a..b is one bulk get
// of known keys (plus the document for the newest), which every state store
// supports; no range query is needed.
package daprstore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strconv"
	"strings"
	"sync"

	dapr "github.com/dapr/go-sdk/client"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/internal/daprconn"
	"github.com/open-autoglm/autoglm/app/internal/keylock"
)

// IndexShards is the number of index keys per collection. Creates of
// different documents contend on an index key only within one shard.
const IndexShards = 64

// Client is the part of the Dapr client the store uses.
type Client interface {
	GetState(ctx context.Context, storeName, key string, meta map[string]string) (*dapr.StateItem, error)
	GetBulkState(ctx context.Context, storeName string, keys []string, meta map[string]string, parallelism int32) ([]*dapr.BulkStateItem, error)
	ExecuteStateTransaction(ctx context.Context, storeName string, meta map[string]string, ops []*dapr.StateOperation) error
	SaveBulkState(ctx context.Context, storeName string, items ...*dapr.SetStateItem) error
	SaveState(ctx context.Context, storeName, key string, data []byte, meta map[string]string, so ...dapr.StateOption) error
	SaveStateWithETag(ctx context.Context, storeName, key string, data []byte, etag string, meta map[string]string, so ...dapr.StateOption) error
	GetMetadata(ctx context.Context) (*dapr.GetMetadataResponse, error)
}

// Store is a core.Store on a Dapr state store component.
type Store struct {
	client Client
	name   string

	mu   sync.Mutex
	kind string // component type, e.g. state.sqlite

	// outbox, when the sidecar has its component (outboxFound), carries the
	// commits of event collections (outbox.go).
	outbox      *Outbox
	outboxFound bool
	keyLocks    keylock.Set // this replica's outbox commits of a document, one at a time

	// written keeps, per document key, the body this replica last
	// committed and the document it encoded. Writes to a document are
	// serialised in the engine, so the next Load usually reads back exactly
	// that body; it then gets the document without decoding it again
	// (decoding a document with its per-field stamps was the largest cost
	// of a write). An entry is handed out once, because the engine applies
	// ops to the loaded document in place.
	writtenMu sync.Mutex
	written   map[string]writtenDoc

	// group commits this replica's transactions on SQLite together, and
	// loads reads its documents together.
	group *txGroup
	loads *loadGroup
}

type writtenDoc struct {
	body []byte
	doc  *core.Document
	// etag is the ETag the write gave the document, when the store's ETags
	// can be foretold (Redis: a counter the write increments); "" if not.
	etag string
}

// maxWritten bounds the remembered documents; past it an arbitrary entry
// makes room (a miss only costs a decode).
const maxWritten = 4096

func (s *Store) remember(key string, body []byte, d *core.Document, etag string) {
	s.writtenMu.Lock()
	defer s.writtenMu.Unlock()
	if s.written == nil {
		s.written = map[string]writtenDoc{}
	}
	if _, ok := s.written[key]; !ok && len(s.written) >= maxWritten {
		for k := range s.written {
			delete(s.written, k)
			break
		}
	}
	s.written[key] = writtenDoc{body: body, doc: d, etag: etag}
}

// take hands out the remembered document of key with the ETag its write
// gave it, if that ETag is known (once, like recall).
func (s *Store) take(key string) (*core.Document, string) {
	s.writtenMu.Lock()
	defer s.writtenMu.Unlock()
	w, ok := s.written[key]
	if !ok || w.etag == "" {
		return nil, ""
	}
	delete(s.written, key)
	return w.doc, w.etag
}

// recall returns the remembered document if body is what was written.
func (s *Store) recall(key string, body []byte) *core.Document {
	s.writtenMu.Lock()
	defer s.writtenMu.Unlock()
	w, ok := s.written[key]
	if !ok {
		return nil
	}
	delete(s.written, key)
	if !bytes.Equal(w.body, body) {
		return nil
	}
	return w.doc
}

var _ core.Store = (*Store)(nil)

// New returns a Store using the state store component name.
func New(client Client, name string) *Store {
	return &Store{client: client, name: name, group: newTxGroup(client, name), loads: newLoadGroup(client, name)}
}

func docKey(k core.Key) string { return k.Collection + ":" + k.ID }

func logKey(k core.Key, v int64) string {
	return k.Collection + ":" + k.ID + ":log:" + strconv.FormatInt(v, 10)
}

func indexKey(coll string, shard int) string {
	return coll + ":_index:" + strconv.Itoa(shard)
}

func shardOf(id string) int {
	h := fnv.New32a()
	h.Write([]byte(id))
	return int(h.Sum32() % IndexShards)
}

// Load reads a document and its ETag. A missing document is a zero Stored.
func (s *Store) Load(ctx context.Context, k core.Key) (core.Stored, error) {
	var item *dapr.StateItem
	var err error
	if s.singleWriter() {
		item, err = s.loads.get(ctx, docKey(k))
	} else {
		item, err = s.client.GetState(ctx, s.name, docKey(k), nil)
	}
	if err != nil {
		return core.Stored{}, classify("load "+k.String(), err)
	}
	if item == nil || len(item.Value) == 0 {
		return core.Stored{}, nil
	}
	if d := s.recall(docKey(k), item.Value); d != nil {
		d.Key = k
		return core.Stored{Doc: d, ETag: item.Etag}, nil
	}
	d, err := core.DecodeDocument(item.Value)
	if err != nil {
		return core.Stored{}, fmt.Errorf("load %s: decode: %w", k, err)
	}
	d.Key = k
	return core.Stored{Doc: d, ETag: item.Etag}, nil
}

// LoadForWrite is Load for a writer, whose commit is guarded by the ETag
// it gets. After this replica's own commit on Redis, whose ETag is a
// version counter each write increments, it returns the committed document
// with the ETag that write produced, without reading it back: if another
// writer changed the document since, the guarded commit fails as an ETag
// conflict, and the writer retries with Load. Elsewhere (and for readers,
// who have no such guard) it is Load.
func (s *Store) LoadForWrite(ctx context.Context, k core.Key) (core.Stored, error) {
	if d, etag := s.take(docKey(k)); d != nil {
		d.Key = k
		return core.Stored{Doc: d, ETag: etag}, nil
	}
	return s.Load(ctx, k)
}

// nextRedisETag is the ETag Dapr's Redis state store gives a document
// written with etag: its version counter, incremented by each write (a
// new document starts at 1). "" when etag is not such a counter.
func nextRedisETag(etag string) string {
	if etag == "" {
		return "1"
	}
	n, err := strconv.ParseUint(etag, 10, 63)
	if err != nil {
		return ""
	}
	return strconv.FormatUint(n+1, 10)
}

// Commit writes the document with its new changes (in Doc.Tail) guarded by
// its ETag, archives the previous commit's tail to the op-log keys, trims the
// log and keeps the collection index.
//
// On stores with real transactions (SQLite, PostgreSQL, ...) all of it is
// one ExecuteStateTransaction. Dapr's Redis store runs a transaction as
// MULTI/EXEC without rollback — a stale ETag fails its own command while the
// others still apply, and a create inside a transaction is not guarded — so
// there the document is written alone with SaveState (ETag and first-write
// concurrency, both enforced for single writes), and the archive, trims and
// index, which are correct whether or not the document write wins, are
// written around it.
func (s *Store) Commit(ctx context.Context, c core.Commit) error {
	atomic, err := s.atomic(ctx)
	if err != nil {
		return err
	}
	body := c.Body
	if body == nil {
		if body, err = core.EncodeDocument(c.Doc); err != nil {
			return fmt.Errorf("commit %s: encode: %w", c.Key, err)
		}
	}
	docItem := &dapr.SetStateItem{Key: docKey(c.Key), Value: body, Options: strong()}
	// First-write concurrency: a create fails when the key exists, and on
	// Redis it also marks the record so later creates are refused.
	docItem.Options.Concurrency = dapr.StateConcurrencyFirstWrite
	if c.ETag != "" {
		docItem.Etag = &dapr.ETag{Value: c.ETag}
	}
	side := make([]*dapr.StateOperation, 0, len(c.Archive)+int(max(c.TrimTo-c.TrimFrom+1, 0)))
	for _, ch := range c.Archive {
		if ch.Version < c.Doc.LogStart {
			continue // already outside the window
		}
		b, err := json.Marshal(ch)
		if err != nil {
			return fmt.Errorf("commit %s: encode change: %w", c.Key, err)
		}
		side = append(side, &dapr.StateOperation{Type: dapr.StateOperationTypeUpsert,
			Item: &dapr.SetStateItem{Key: logKey(c.Key, ch.Version), Value: b}})
	}
	if c.TrimFrom > 0 {
		for v := c.TrimFrom; v <= c.TrimTo; v++ {
			side = append(side, &dapr.StateOperation{Type: dapr.StateOperationTypeDelete,
				Item: &dapr.SetStateItem{Key: logKey(c.Key, v)}})
		}
	}

	if atomic && s.outboxFor(c.Key.Collection) {
		// One commit of the document at a time in this replica (the
		// engine's and compaction's), so nothing of ours slips between the
		// ETag check of an outbox commit and its transaction.
		defer s.keyLocks.Lock(docItem.Key)()
		if len(c.Changes) > 0 { // compaction writes no change and no event
			return s.commitOutbox(ctx, c, body, side)
		}
	}
	if atomic {
		ops := append(side, &dapr.StateOperation{Type: dapr.StateOperationTypeUpsert, Item: docItem})
		if c.IndexAdd || c.IndexRemove {
			op, err := s.indexOp(ctx, c.Key, c.IndexAdd)
			if err != nil {
				return err
			}
			if op != nil {
				ops = append(ops, op)
			}
		}
		if s.singleWriter() {
			err = s.group.exec(ctx, ops)
		} else {
			err = s.client.ExecuteStateTransaction(ctx, s.name, nil, ops)
		}
		if err != nil {
			return classify("commit "+c.Key.String(), err)
		}
		s.remember(docItem.Key, body, c.Doc, "")
		return nil
	}

	if len(side) > 0 {
		if err := s.client.ExecuteStateTransaction(ctx, s.name, nil, side); err != nil {
			return classify("archive "+c.Key.String(), err)
		}
	}
	if err := s.client.SaveStateWithETag(ctx, s.name, docItem.Key, docItem.Value, c.ETag, nil, docOptions()...); err != nil {
		return classify("commit "+c.Key.String(), err)
	}
	etag := ""
	if s.redis() {
		etag = nextRedisETag(c.ETag)
	}
	s.remember(docItem.Key, body, c.Doc, etag)
	if c.IndexAdd || c.IndexRemove {
		// The document is durable; the listing catches up with its own
		// compare-and-swap loop.
		for attempt := 0; ; attempt++ {
			op, err := s.indexOp(ctx, c.Key, c.IndexAdd)
			if err == nil && op != nil {
				err = s.client.SaveBulkState(ctx, s.name, op.Item)
			}
			if err == nil || attempt >= 10 {
				return nil
			}
		}
	}
	return nil
}

func docOptions() []dapr.StateOption {
	return []dapr.StateOption{dapr.WithConcurrency(dapr.StateConcurrencyFirstWrite),
		dapr.WithConsistency(dapr.StateConsistencyStrong)}
}

// redis reports whether the store is Redis (known after atomic).
func (s *Store) redis() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.kind == "state.redis"
}

// singleWriter reports whether the store is SQLite (known after atomic).
func (s *Store) singleWriter() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.kind == "state.sqlite"
}

// atomic reports whether the state store's transactions roll back as a
// whole (asked once from the sidecar's metadata API).
func (s *Store) atomic(ctx context.Context) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.kind != "" {
		return s.kind != "state.redis", nil
	}
	md, err := s.client.GetMetadata(ctx)
	if err != nil {
		return false, classify("metadata", err)
	}
	if c := daprconn.Component(md, s.name); c != nil {
		s.kind = c.Type
	}
	if s.outbox != nil && daprconn.Component(md, s.outbox.Store) != nil {
		s.outboxFound = true
	}
	if s.kind == "" {
		return false, fmt.Errorf("state store %q is not registered with the sidecar: %w", s.name, core.ErrUnavailable)
	}
	return s.kind != "state.redis", nil
}

type index struct {
	IDs []string `json:"ids"`
}

// indexOp reads the document's index shard and returns the guarded write that
// adds or removes its id, or nil when the shard already says so.
func (s *Store) indexOp(ctx context.Context, k core.Key, add bool) (*dapr.StateOperation, error) {
	key := indexKey(k.Collection, shardOf(k.ID))
	item, err := s.client.GetState(ctx, s.name, key, nil)
	if err != nil {
		return nil, classify("index "+k.Collection, err)
	}
	var idx index
	if item != nil && len(item.Value) > 0 {
		if err := json.Unmarshal(item.Value, &idx); err != nil {
			return nil, fmt.Errorf("index %s: decode: %w", key, err)
		}
	}
	i, found := slices.BinarySearch(idx.IDs, k.ID)
	switch {
	case add && !found:
		idx.IDs = slices.Insert(idx.IDs, i, k.ID)
	case !add && found:
		idx.IDs = slices.Delete(idx.IDs, i, i+1)
	default:
		return nil, nil
	}
	b, _ := json.Marshal(idx)
	it := &dapr.SetStateItem{Key: key, Value: b, Options: strong()}
	if item != nil && item.Etag != "" {
		it.Etag = &dapr.ETag{Value: item.Etag}
	} else {
		it.Options.Concurrency = dapr.StateConcurrencyFirstWrite
	}
	return &dapr.StateOperation{Type: dapr.StateOperationTypeUpsert, Item: it}, nil
}

// Changes reads log entries from..to with one bulk get, in version order,
// stopping at the first missing entry.
func (s *Store) Changes(ctx context.Context, k core.Key, from, to int64) ([]core.Change, error) {
	if from < 1 {
		from = 1
	}
	var out []core.Change
	// A commit archives the previous tail before it replaces it, so an entry
	// missing from both the keys and the tail was archived between the two
	// reads: read again (bounded).
	for attempt := 0; attempt < 3 && from <= to; attempt++ {
		got, last, err := s.changesOnce(ctx, k, from, to)
		if err != nil {
			return nil, err
		}
		out = append(out, got...)
		from += int64(len(got))
		if last < from {
			break // the document is not newer: the entry is really gone
		}
	}
	return out, nil
}

// changesOnce reads from..to from the log keys and the document's tail, and
// also returns the document's version.
func (s *Store) changesOnce(ctx context.Context, k core.Key, from, to int64) ([]core.Change, int64, error) {
	keys := make([]string, 0, to-from+1)
	for v := from; v <= to; v++ {
		keys = append(keys, logKey(k, v))
	}
	items, err := s.client.GetBulkState(ctx, s.name, keys, nil, 8)
	if err != nil {
		return nil, 0, classify("changes "+k.String(), err)
	}
	byKey := make(map[string][]byte, len(items))
	for _, it := range items {
		if it.Error != "" {
			return nil, 0, fmt.Errorf("changes %s: %s: %w", k, it.Error, core.ErrUnavailable)
		}
		byKey[it.Key] = it.Value
	}
	out := make([]core.Change, 0, len(keys))
	for _, key := range keys {
		b := byKey[key]
		if len(b) == 0 {
			break
		}
		var ch core.Change
		if err := json.Unmarshal(b, &ch); err != nil {
			return nil, 0, fmt.Errorf("changes %s: decode %s: %w", k, key, err)
		}
		out = append(out, ch)
	}
	next := from + int64(len(out))
	if next > to {
		return out, to, nil
	}
	// The latest commit's changes live in the document until the next
	// commit archives them.
	st, err := s.Load(ctx, k)
	if err != nil {
		return nil, 0, err
	}
	if st.Doc == nil {
		return out, 0, nil
	}
	for _, ch := range st.Doc.Tail {
		if ch.Version == next && next <= to {
			out = append(out, ch)
			next++
		}
	}
	return out, st.Doc.Version, nil
}

// List pages through a collection's ids. The cursor is "<shard>.<last id>".
func (s *Store) List(ctx context.Context, coll, cursor string, limit int) (core.Page, error) {
	shard, after := 0, ""
	if cursor != "" {
		a, b, ok := strings.Cut(cursor, ".")
		n, err := strconv.Atoi(a)
		if !ok || err != nil || n < 0 || n >= IndexShards {
			return core.Page{}, core.Errorf(core.CodeBadRequest, "malformed cursor %q", cursor)
		}
		shard, after = n, b
	}
	var page core.Page
	for ; shard < IndexShards; shard, after = shard+1, "" {
		item, err := s.client.GetState(ctx, s.name, indexKey(coll, shard), nil)
		if err != nil {
			return core.Page{}, classify("list "+coll, err)
		}
		if item == nil || len(item.Value) == 0 {
			continue
		}
		var idx index
		if err := json.Unmarshal(item.Value, &idx); err != nil {
			return core.Page{}, fmt.Errorf("list %s: decode: %w", coll, err)
		}
		i := 0
		if after != "" {
			i, _ = slices.BinarySearch(idx.IDs, after)
			if i < len(idx.IDs) && idx.IDs[i] == after {
				i++
			}
		}
		for ; i < len(idx.IDs); i++ {
			if len(page.IDs) == limit {
				page.Next = strconv.Itoa(shard) + "." + page.IDs[len(page.IDs)-1]
				return page, nil
			}
			page.IDs = append(page.IDs, idx.IDs[i])
		}
	}
	return page, nil
}

// Documents bulk-reads documents (for listings).
func (s *Store) Documents(ctx context.Context, coll string, ids []string) ([]*core.Document, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	keys := make([]string, len(ids))
	for i, id := range ids {
		keys[i] = coll + ":" + id
	}
	items, err := s.client.GetBulkState(ctx, s.name, keys, nil, 8)
	if err != nil {
		return nil, classify("list "+coll, err)
	}
	byKey := make(map[string][]byte, len(items))
	for _, it := range items {
		byKey[it.Key] = it.Value
	}
	out := make([]*core.Document, 0, len(ids))
	for i, key := range keys {
		if len(byKey[key]) == 0 {
			continue
		}
		d, err := core.DecodeDocument(byKey[key])
		if err != nil {
			return nil, fmt.Errorf("list %s: decode %s: %w", coll, key, err)
		}
		d.Key = core.Key{Collection: coll, ID: ids[i]}
		out = append(out, d)
	}
	return out, nil
}

func strong() *dapr.StateOptions {
	return &dapr.StateOptions{Consistency: dapr.StateConsistencyStrong}
}

// classify wraps a Dapr error with the domain sentinel it means.
//
// An ETag mismatch comes back as gRPC Aborted from a single save but as
// Internal ("possible etag mismatch") from a transaction, and a first-write
// of an existing key as a duplicate/exists error from some stores; all of
// them mean another writer won.
func classify(op string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return fmt.Errorf("%s: %w: %v", op, core.ErrUnavailable, err)
	}
	st, _ := status.FromError(err)
	msg := strings.ToLower(st.Message())
	switch {
	case st.Code() == codes.Aborted,
		strings.Contains(msg, "etag mismatch"),
		strings.Contains(msg, "etag"),
		strings.Contains(msg, "duplicate key"),
		strings.Contains(msg, "already exists"),
		strings.Contains(msg, "unique constraint"),
		strings.Contains(msg, "failed to set key"),   // Redis: a guarded create of an existing key
		strings.Contains(msg, "no item was updated"): // PostgreSQL: the same
		return fmt.Errorf("%s: %w: %s", op, core.ErrVersionConflict, st.Message())
	case st.Code() == codes.Unavailable, st.Code() == codes.DeadlineExceeded,
		strings.Contains(msg, "connection refused"),
		// daprd's resiliency breaker: open, or half-open and already
		// letting its one trial request through.
		strings.Contains(msg, "circuit breaker"), strings.Contains(msg, "too many requests"):
		return fmt.Errorf("%s: %w: %s", op, core.ErrUnavailable, st.Message())
	case unreachable(msg):
		// The store (not the sidecar) is down or restarting; a write may or
		// may not have been applied, which a retry with the same op id
		// settles.
		return fmt.Errorf("%s: %w: %s", op, core.ErrUnavailable, st.Message())
	}
	return fmt.Errorf("%s: %w", op, err)
}

// unreachable reports whether a store error says the backend could not be
// reached or went away mid-call: a daprd resiliency timeout, a lost
// connection, or PostgreSQL shutting down, starting up or terminating
// connections (SQLSTATE class 57P).
func unreachable(msg string) bool {
	for _, s := range []string{"deadline exceeded", "failed to connect", "connection reset", "broken pipe",
		"unexpected eof", "conn closed", "i/o timeout", "sqlstate 57p", "database system is"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}
