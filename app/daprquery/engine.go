package daprquery

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	dapr "github.com/dapr/go-sdk/client"
	"github.com/sirupsen/logrus"

	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/internal/logs"
	"github.com/open-autoglm/autoglm/app/query"
	"github.com/open-autoglm/autoglm/app/query/live"
)

// Client is the part of the Dapr client the engine uses.
type Client interface {
	QueryStateAlpha1(ctx context.Context, storeName, query string, meta map[string]string) (*dapr.QueryResponse, error)
	GetState(ctx context.Context, storeName, key string, meta map[string]string) (*dapr.StateItem, error)
	GetBulkState(ctx context.Context, storeName string, keys []string, meta map[string]string, parallelism int32) ([]*dapr.BulkStateItem, error)
	SaveState(ctx context.Context, storeName, key string, data []byte, meta map[string]string, so ...dapr.StateOption) error
	SaveStateWithETag(ctx context.Context, storeName, key string, data []byte, etag string, meta map[string]string, so ...dapr.StateOption) error
}

// Lister pages through a collection's ids (daprstore.Store.List).
type Lister interface {
	List(ctx context.Context, coll, cursor string, limit int) (core.Page, error)
}

// Options configure an Engine.
type Options struct {
	Client    Client
	Store     string // state store component name
	Transport *Transport
	Lister    Lister
	// Eligible reports whether a collection's commits go through the
	// transport (nil: all do). A collection whose commits take another
	// path (the outbox of event collections) is never served here.
	Eligible func(ctx context.Context, coll string) bool
	Log      logrus.FieldLogger
}

// Engine runs queries through the state store's query API.
type Engine struct {
	opt Options

	mu      sync.Mutex
	filling map[string]bool
	// failed holds when a collection's last backfill failed; it is not
	// tried again for retryAfter.
	failed map[string]time.Time
}

// retryAfter is how long a collection whose backfill failed stays on the
// index before the next attempt.
const retryAfter = 10 * time.Minute

// New returns an Engine.
func New(opt Options) *Engine {
	if opt.Log == nil {
		opt.Log = logs.Discard()
	}
	return &Engine{opt: opt, filling: map[string]bool{}, failed: map[string]time.Time{}}
}

// Supported reports whether the state store has a query API this engine
// speaks: state.postgresql v1 (v2 has none).
func (e *Engine) Supported(ctx context.Context) (bool, error) {
	// The transport asked the sidecar once already: it stores JSON on
	// exactly these stores.
	return e.opt.Transport.storesJSON(ctx, e.opt.Store)
}

// segment is a path key the query language can address: it is put
// between single quotes in SQL unescaped.
var segment = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// Pushable reports whether the condition is expressible in the Dapr query
// language on state.postgresql without losing a result: "==" and "in" with
// strings, booleans and numbers PostgreSQL prints as Go does, on paths of
// plain keys. The store compares the field's text with the value's text,
// so it may return more (a number 5 for "5"); the engine matches every
// candidate again. "!=" (a missing field matches it, SQL's NULL does not),
// "<", "<=", ">", ">=" (text order, strings refused), "contains" and
// null values are not expressible.
func Pushable(c query.Cond) bool {
	for _, seg := range strings.Split(c.Path, ".") {
		if !segment.MatchString(seg) {
			return false
		}
	}
	switch c.Op {
	case query.OpEq:
		return pushValue(c.Value)
	case query.OpIn:
		vals := c.Value.([]any)
		return len(vals) > 0 && !slices.ContainsFunc(vals, func(v any) bool { return !pushValue(v) })
	}
	return false
}

// pushValue reports whether v's text (Go's %v, as daprd formats a query
// value) is the text PostgreSQL gives for the same JSON value.
func pushValue(v any) bool {
	switch x := v.(type) {
	case string, bool:
		return true
	case float64:
		if math.IsInf(x, 0) || math.IsNaN(x) || x == 0 && math.Signbit(x) {
			return false
		}
		return fmt.Sprint(x) == strconv.FormatFloat(x, 'f', -1, 64)
	}
	return false
}

// Filter is the Dapr query filter for q on collection coll of app: the
// collection tag and every pushable condition. ok is false when no
// condition is pushable (the query would read the whole collection).
func Filter(app, coll string, q query.Query) (map[string]any, bool) {
	and := []any{map[string]any{"EQ": map[string]any{CollField: app + "/" + coll}}}
	for _, c := range q.Where {
		if !Pushable(c) {
			continue
		}
		key := "state.data." + c.Path
		if c.Op == query.OpEq {
			and = append(and, map[string]any{"EQ": map[string]any{key: c.Value}})
		} else {
			and = append(and, map[string]any{"IN": map[string]any{key: c.Value}})
		}
	}
	if len(and) < 2 {
		return nil, false
	}
	return map[string]any{"AND": and}, true
}

type marker struct {
	State string `json:"state"` // filling, ready
}

// Query runs q on collection coll through the query API, as admit lets
// the caller see it. ok is false when the query API cannot serve it (the
// store has none, no condition is expressible, or the collection's
// documents are not all stored as JSON yet); the caller then uses the
// in-memory index.
func (e *Engine) Query(ctx context.Context, coll string, q query.Query, admit live.Admit) (docs []*live.Doc, more, ok bool, err error) {
	if sup, err := e.Supported(ctx); err != nil || !sup {
		return nil, false, false, err
	}
	if e.opt.Eligible != nil && !e.opt.Eligible(ctx, coll) {
		return nil, false, false, nil
	}
	filter, ok := Filter(e.opt.Transport.App, coll, q)
	if !ok {
		return nil, false, false, nil
	}
	ready, err := e.ready(ctx, coll)
	if err != nil || !ready {
		return nil, false, false, err
	}
	body, _ := json.Marshal(map[string]any{"filter": filter})
	resp, err := e.opt.Client.QueryStateAlpha1(ctx, e.opt.Store, string(body), nil)
	if err != nil {
		// The candidates may exceed the largest answer daprd sends
		// (--max-body-size, 4 MB by default); the index answers.
		if ctx.Err() != nil {
			return nil, false, false, core.Errorf(core.CodeUnavailable, "query %s: %v", coll, err)
		}
		e.opt.Log.WithError(err).WithField("collection", coll).Warn("state query API failed; the index answers")
		return nil, false, false, nil
	}
	for _, r := range resp.Results {
		c, isDoc := docColl(r.Key)
		if !isDoc || c != coll {
			continue
		}
		id := r.Key[len(coll)+1:]
		d, err := core.DecodeDocument(r.Value)
		if err != nil {
			return nil, false, false, fmt.Errorf("query %s: decode %s: %w", coll, r.Key, err)
		}
		if d.Deleted || d.Version == 0 {
			continue
		}
		doc := &live.Doc{ID: id, Version: d.Version, Data: d.Data()}
		if !q.Admits(query.Item{ID: id, Data: doc.Data}) || admit != nil && !admit(doc.Data) {
			continue
		}
		docs = append(docs, doc)
	}
	slices.SortFunc(docs, func(a, b *live.Doc) int {
		return q.Compare(query.Item{ID: a.ID, Data: a.Data}, query.Item{ID: b.ID, Data: b.Data})
	})
	if q.Limit > 0 && len(docs) > q.Limit {
		return docs[:q.Limit], true, true, nil
	}
	return docs, false, true, nil
}

// ready reports whether every document of coll is stored as JSON; when
// not known, it starts the backfill that makes it so.
func (e *Engine) ready(ctx context.Context, coll string) (bool, error) {
	item, err := e.opt.Client.GetState(ctx, e.opt.Store, MarkerKey(coll), nil)
	if err != nil {
		return false, core.Errorf(core.CodeUnavailable, "query %s: %v", coll, err)
	}
	var m marker
	if item != nil && len(item.Value) > 0 && json.Unmarshal(item.Value, &m) == nil && m.State == "ready" {
		return true, nil
	}
	e.mu.Lock()
	start := !e.filling[coll] && time.Since(e.failed[coll]) > retryAfter
	if start {
		e.filling[coll] = true
	}
	e.mu.Unlock()
	if start {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
			defer cancel()
			err := e.Backfill(ctx, coll)
			e.mu.Lock()
			delete(e.filling, coll)
			if err != nil {
				e.failed[coll] = time.Now()
			}
			e.mu.Unlock()
			if err != nil {
				e.opt.Log.WithError(err).WithField("collection", coll).Warn("query API backfill failed; queries use the index")
			}
		}()
	}
	return false, nil
}

// Backfill rewrites every document of coll as tagged JSON and then marks
// the collection ready. The marker is written first as "filling" and
// turned "ready" under its ETag: a transaction that stored a document of
// the collection as bytes meanwhile deleted it, and the backfill fails.
// A document rewritten by a commit meanwhile fails its own ETag check and
// is skipped: the commit stored it as JSON.
func (e *Engine) Backfill(ctx context.Context, coll string) error {
	c, store := e.opt.Client, e.opt.Store
	b, _ := json.Marshal(marker{State: "filling"})
	if err := c.SaveState(ctx, store, MarkerKey(coll), b, nil); err != nil {
		return err
	}
	item, err := c.GetState(ctx, store, MarkerKey(coll), nil)
	if err != nil {
		return err
	}
	if item == nil || item.Etag == "" {
		return fmt.Errorf("backfill %s: the marker vanished", coll)
	}
	etag := item.Etag
	jsonMeta := map[string]string{"contentType": "application/json"}
	n := 0
	for cursor := ""; ; {
		page, err := e.opt.Lister.List(ctx, coll, cursor, 200)
		if err != nil {
			return err
		}
		keys := make([]string, len(page.IDs))
		for i, id := range page.IDs {
			keys[i] = coll + ":" + id
		}
		items, err := c.GetBulkState(ctx, store, keys, nil, 8)
		if err != nil {
			return err
		}
		for _, it := range items {
			if len(it.Value) == 0 {
				continue
			}
			tagged, ok := e.opt.Transport.Tag(coll, it.Value)
			if !ok || !jsonable(tagged) {
				return fmt.Errorf("backfill %s: %s cannot be stored as JSON", coll, it.Key)
			}
			if err := c.SaveStateWithETag(ctx, store, it.Key, tagged, it.Etag, jsonMeta); err != nil {
				if ctx.Err() != nil {
					return err
				}
				continue // rewritten meanwhile
			}
			n++
		}
		if page.Next == "" {
			break
		}
		cursor = page.Next
	}
	b, _ = json.Marshal(marker{State: "ready"})
	if err := c.SaveStateWithETag(ctx, store, MarkerKey(coll), b, etag, nil); err != nil {
		return fmt.Errorf("backfill %s: %w", coll, err)
	}
	e.opt.Log.WithFields(logrus.Fields{"collection": coll, "documents": n}).Info("collection served by the state query API")
	return nil
}
