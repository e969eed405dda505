package merge

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"

	"github.com/open-autoglm/autoglm/app/clock"
)

// Policy names a collection's conflict policy.
type Policy string

// Conflict policies.
const (
	LWW Policy = "lww" // per-field last-writer-wins by (HLC, client id)
)

// Doc is the mergeable state of one document: its plain JSON data plus the
// per-field metadata the policies need. It serialises to JSON as stored.
type Doc struct {
	Data map[string]any `json:"data"`
	// Stamps holds the HLC of the last set or unset of each path; an unset
	// leaves its stamp behind as a tombstone so an older set cannot revive it.
	Stamps map[string]clock.Timestamp `json:"stamps,omitempty"`
}

// NewDoc returns an empty document state.
func NewDoc() *Doc { return &Doc{Data: map[string]any{}} }

// Clone returns a deep copy.
func (d *Doc) Clone() *Doc {
	return &Doc{Data: cloneMap(d.Data), Stamps: maps.Clone(d.Stamps)}
}

// Input is one client operation as the policies see it.
type Input struct {
	Client  string          // author
	HLC     clock.Timestamp // author's stamp, already merged into the server clock
	Base    int64           // document version the author based the op on
	Current int64           // document version now
	Ops     []FieldOp
}

// Apply merges in into d under policy p and returns the effective field
// operations: what actually changed, in a form ApplyPlain reproduces on a
// plain copy of the data. On error d is unchanged.
func Apply(p Policy, d *Doc, in Input) ([]FieldOp, error) {
	switch p {
	case LWW, "":
	default:
		return nil, fmt.Errorf("%w: unknown policy %q", ErrInvalidOp, p)
	}
	next := d.Clone()
	if next.Stamps == nil {
		next.Stamps = map[string]clock.Timestamp{}
	}
	eff := make([]FieldOp, 0, len(in.Ops))
	for _, op := range in.Ops {
		if err := op.Validate(); err != nil {
			return nil, err
		}
		if op.Op == KindSet || op.Op == KindUnset {
			if newer(next.Stamps, op.Path, in.HLC) {
				continue // a later write of this field (or a parent) wins
			}
			for k := range next.Stamps {
				if isUnder(k, op.Path) {
					delete(next.Stamps, k)
				}
			}
			next.Stamps[op.Path] = in.HLC
		}
		if err := applyPlain(next.Data, op); err != nil {
			return nil, err
		}
		eff = append(eff, op)
	}
	*d = *next
	return eff, nil
}

// newer reports whether path or one of its ancestors was written at a stamp
// after ts.
func newer(stamps map[string]clock.Timestamp, path string, ts clock.Timestamp) bool {
	for p := path; ; {
		if s, ok := stamps[p]; ok && s.After(ts) {
			return true
		}
		i := lastDot(p)
		if i < 0 {
			return false
		}
		p = p[:i]
	}
}

func lastDot(s string) int {
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == '.' {
			return i
		}
	}
	return -1
}

// isUnder reports whether k is path itself or lies below it.
func isUnder(k, path string) bool {
	return k == path || (len(k) > len(path) && k[:len(path)] == path && k[len(path)] == '.')
}

// ApplyPlain applies effective operations to plain JSON data, as a client
// holding a local copy does with each delta. On error data may be partly
// changed; callers that need atomicity apply to a copy.
func ApplyPlain(data map[string]any, ops []FieldOp) error {
	for _, op := range ops {
		if err := op.Validate(); err != nil {
			return err
		}
		if err := applyPlain(data, op); err != nil {
			return err
		}
	}
	return nil
}

func applyPlain(data map[string]any, op FieldOp) error {
	segs := op.Segments()
	parent := data
	for _, s := range segs[:len(segs)-1] {
		child, ok := parent[s].(map[string]any)
		if !ok {
			if op.Op == KindUnset {
				return nil // nothing there to remove
			}
			child = map[string]any{}
			parent[s] = child
		}
		parent = child
	}
	leaf := segs[len(segs)-1]
	switch op.Op {
	case KindSet:
		var v any
		if err := json.Unmarshal(op.Value, &v); err != nil {
			return fmt.Errorf("%w: %v", ErrInvalidOp, err)
		}
		parent[leaf] = v
	case KindUnset:
		delete(parent, leaf)
	case KindInc:
		var n float64
		_ = json.Unmarshal(op.Value, &n)
		switch cur := parent[leaf].(type) {
		case nil:
			parent[leaf] = n
		case float64:
			parent[leaf] = cur + n
		default:
			return fmt.Errorf("%w: inc %q: field is not a number", ErrInvalidOp, op.Path)
		}
	case KindAdd, KindRemove:
		var v any
		if err := json.Unmarshal(op.Value, &v); err != nil {
			return fmt.Errorf("%w: %v", ErrInvalidOp, err)
		}
		var set []any
		switch cur := parent[leaf].(type) {
		case nil:
		case []any:
			set = cur
		default:
			return fmt.Errorf("%w: %s %q: field is not a set", ErrInvalidOp, op.Op, op.Path)
		}
		i := slices.IndexFunc(set, func(e any) bool { return jsonEqual(e, v) })
		switch {
		case op.Op == KindAdd && i < 0:
			parent[leaf] = append(slices.Clone(set), v)
		case op.Op == KindRemove && i >= 0:
			parent[leaf] = slices.Delete(slices.Clone(set), i, i+1)
		}
	}
	return nil
}

func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}

func cloneMap(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = cloneValue(v)
	}
	return out
}

func cloneValue(v any) any {
	switch t := v.(type) {
	case map[string]any:
		return cloneMap(t)
	case []any:
		out := make([]any, len(t))
		for i, e := range t {
			out[i] = cloneValue(e)
		}
		return out
	}
	return v
}
