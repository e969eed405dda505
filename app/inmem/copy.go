package inmem

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"slices"

	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/merge"
)

// The Store keeps documents and op-log entries as deep copies rather than
// encoded: encoding and decoding the whole document on every commit and
// load made the store, not the code under test, the cost of every test
// that writes a document many times. A copy holds what the stored record
// would give back (core.EncodeDocument, then core.DecodeDocument; the JSON
// of a change for the op log; TestCopyIsJSONRoundTrip): fields the encoding
// leaves out are dropped, empty optional fields come back nil, raw JSON
// values come back compacted, and what the encoding refuses (a NaN, an
// infinity, invalid raw JSON) fails the commit.

// copier makes such copies; err is the first value the encoding would
// have refused.
type copier struct{ err error }

// copyDocument copies a document the store holds (already checked).
func copyDocument(d *core.Document) *core.Document {
	var c copier
	return c.document(d)
}

// copyChange copies an op-log entry the store holds (already checked).
func copyChange(ch core.Change) core.Change {
	var c copier
	return c.change(ch)
}

func (c *copier) fail(err error) {
	if c.err == nil {
		c.err = err
	}
}

func (c *copier) document(d *core.Document) *core.Document {
	if d == nil {
		return &core.Document{} // a null document decodes to the zero one
	}
	out := &core.Document{
		Version:  d.Version,
		Deleted:  d.Deleted,
		State:    c.state(d.State),
		Horizon:  d.Horizon,
		Updated:  d.Updated,
		LogStart: d.LogStart,
	}
	if len(d.Idem) > 0 {
		out.Idem = make(map[string]*core.ClientOps, len(d.Idem))
		for id, ops := range d.Idem {
			out.Idem[id] = clientOps(ops)
		}
	}
	if len(d.Gone) > 0 {
		out.Gone = slices.Clone(d.Gone)
	}
	if len(d.Tail) > 0 {
		out.Tail = make([]core.Change, len(d.Tail))
		for i, ch := range d.Tail {
			out.Tail[i] = c.change(ch)
		}
	}
	return out
}

func clientOps(o *core.ClientOps) *core.ClientOps {
	if o == nil {
		return nil
	}
	out := &core.ClientOps{Floor: o.Floor, Last: max(o.Last, 0)} // the encoding keeps no negative time
	if len(o.Recent) > 0 {
		out.Recent = slices.Clone(o.Recent)
	}
	return out
}

func (c *copier) state(s *merge.Doc) *merge.Doc {
	if s == nil {
		return nil
	}
	out := &merge.Doc{}
	if s.Data != nil {
		out.Data = c.object(s.Data)
	}
	if len(s.Stamps) > 0 {
		out.Stamps = maps.Clone(s.Stamps)
	}
	if len(s.Elems) > 0 {
		out.Elems = merge.CloneElems(s.Elems)
	}
	if len(s.TextDel) > 0 {
		out.TextDel = maps.Clone(s.TextDel)
	}
	return out
}

func (c *copier) object(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = c.value(v)
	}
	return out
}

// value copies one JSON value of a document's data.
func (c *copier) value(v any) any {
	switch t := v.(type) {
	case nil, string, bool:
		return v
	case float64:
		if math.IsNaN(t) || math.IsInf(t, 0) {
			c.fail(fmt.Errorf("json: unsupported value: %v", t))
		}
		return v
	case map[string]any:
		if t == nil {
			return nil
		}
		return c.object(t)
	case []any:
		if t == nil {
			return nil
		}
		out := make([]any, len(t))
		for i, e := range t {
			out[i] = c.value(e)
		}
		return out
	}
	// Anything else (an int, a json.Number, a struct) comes back from
	// storage as its decoded JSON.
	b, err := json.Marshal(v)
	if err != nil {
		c.fail(err)
		return nil
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		c.fail(err)
	}
	return out
}

func (c *copier) change(ch core.Change) core.Change {
	out := ch
	out.Fanout = nil // it never leaves the replica
	out.Ops = nil
	if len(ch.Ops) > 0 {
		out.Ops = make([]merge.FieldOp, len(ch.Ops))
		for i, op := range ch.Ops {
			out.Ops[i] = merge.FieldOp{Op: op.Op, Path: op.Path, Value: c.raw(op.Value)}
		}
	}
	return out
}

// raw copies a raw JSON value, compacted as its encoding writes it.
func (c *copier) raw(v json.RawMessage) json.RawMessage {
	if len(v) == 0 {
		return nil
	}
	var b bytes.Buffer
	if err := json.Compact(&b, v); err != nil {
		c.fail(err)
		return nil
	}
	return b.Bytes()
}
