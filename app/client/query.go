package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/merge"
	"github.com/open-autoglm/autoglm/app/protocol"
	"github.com/open-autoglm/autoglm/app/query"
)

// QuerySpec is a live query (docs/protocol.md, "Queries"): conditions
// [path, op, value], order keys [path, "asc"|"desc"], and a limit (0: none).
type QuerySpec struct {
	Where   [][3]any
	OrderBy [][2]string
	Limit   int
}

// QueryItem is one document of a query's result.
type QueryItem struct {
	ID      string
	Version int64
	Data    map[string]any
}

// Query is a live query's result, kept up to date by the server.
type Query struct {
	QID        string
	Collection string

	c    *Client
	body json.RawMessage
	q    query.Query

	mu     sync.Mutex
	items  map[string]QueryItem
	synced chan struct{}
	notify chan struct{}
	err    *core.Error
}

// Query starts a live query over collection and waits for its first
// result.
func (c *Client) Query(ctx context.Context, collection string, spec QuerySpec) (*Query, error) {
	w := map[string]any{}
	if len(spec.Where) > 0 {
		w["where"] = spec.Where
	}
	if len(spec.OrderBy) > 0 {
		w["order_by"] = spec.OrderBy
	}
	if spec.Limit > 0 {
		w["limit"] = spec.Limit
	}
	body, err := json.Marshal(w)
	if err != nil {
		return nil, err
	}
	q, err := query.Parse(body)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if c.queries == nil {
		c.queries = map[string]*Query{}
	}
	c.nextQID++
	lq := &Query{QID: fmt.Sprint("q", c.nextQID), Collection: collection, c: c, body: body, q: q,
		items: map[string]QueryItem{}, synced: make(chan struct{}), notify: make(chan struct{}, 1)}
	c.queries[lq.QID] = lq
	conn := c.conn
	c.mu.Unlock()
	if conn == nil {
		return lq, errors.New("not connected")
	}
	if err := conn.Send(ctx, lq.sub()); err != nil {
		return lq, err
	}
	select {
	case <-lq.synced:
		if e := lq.Err(); e != nil {
			return lq, e
		}
		return lq, nil
	case <-ctx.Done():
		return lq, ctx.Err()
	}
}

// sub is the query's sub message, resuming from the versions held.
func (lq *Query) sub() protocol.Message {
	lq.mu.Lock()
	defer lq.mu.Unlock()
	have := make(map[string]int64, len(lq.items))
	for id, it := range lq.items {
		have[id] = it.Version
	}
	return protocol.Message{T: protocol.TSub, Coll: lq.Collection, QID: lq.QID, Query: lq.body, Have: have}
}

// Results returns the result in the query's order.
func (lq *Query) Results() []QueryItem {
	lq.mu.Lock()
	defer lq.mu.Unlock()
	out := slices.Collect(maps.Values(lq.items))
	slices.SortFunc(out, func(a, b QueryItem) int {
		return lq.q.Compare(query.Item{ID: a.ID, Data: a.Data}, query.Item{ID: b.ID, Data: b.Data})
	})
	return out
}

// Changed is signalled (coalesced) after each change of the result.
func (lq *Query) Changed() <-chan struct{} { return lq.notify }

// Err is the server's refusal of the query, if any.
func (lq *Query) Err() *core.Error {
	lq.mu.Lock()
	defer lq.mu.Unlock()
	return lq.err
}

// Close ends the query.
func (lq *Query) Close(ctx context.Context) error {
	lq.c.mu.Lock()
	delete(lq.c.queries, lq.QID)
	conn := lq.c.conn
	lq.c.mu.Unlock()
	if conn == nil {
		return nil
	}
	return conn.Send(ctx, protocol.Message{T: protocol.TUnsub, QID: lq.QID})
}

// queryMessage applies a message of a live query; a delta that does not
// follow the version held makes the client resume the query.
func (c *Client) queryMessage(ctx context.Context, m protocol.Message) error {
	c.mu.Lock()
	lq := c.queries[m.QID]
	conn := c.conn
	c.mu.Unlock()
	if lq == nil {
		return nil
	}
	id := strings.TrimPrefix(m.Doc, lq.Collection+"/")
	lq.mu.Lock()
	resume := false
	switch m.T {
	case protocol.TSynced, protocol.TError:
		if m.T == protocol.TError {
			lq.err = &core.Error{Code: m.Code, Message: m.Msg, Details: m.Details}
		}
		select {
		case <-lq.synced:
		default:
			close(lq.synced)
		}
	case protocol.TSnap, protocol.TAdded:
		data := m.Data
		if data == nil {
			data = map[string]any{}
		}
		lq.items[id] = QueryItem{ID: id, Version: m.V, Data: data}
	case protocol.TDelta:
		held, ok := lq.items[id]
		if !ok || m.V != held.Version+1 {
			resume = true
			break
		}
		data := map[string]any{}
		if !m.New {
			data = cloneData(held.Data)
		}
		if err := merge.ApplyPlain(data, m.Ops); err != nil {
			delete(lq.items, id)
			resume = true
			break
		}
		lq.items[id] = QueryItem{ID: id, Version: m.V, Data: data}
	case protocol.TRemoved:
		delete(lq.items, id)
	}
	lq.mu.Unlock()
	select {
	case lq.notify <- struct{}{}:
	default:
	}
	if resume && conn != nil {
		return conn.Send(ctx, lq.sub())
	}
	return nil
}

func cloneData(d map[string]any) map[string]any {
	var out map[string]any
	_ = json.Unmarshal(mustJSON(d), &out)
	if out == nil {
		out = map[string]any{}
	}
	return out
}
