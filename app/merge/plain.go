package merge

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strings"
)

// ApplyPlain applies effective operations to plain JSON data, as a client
// holding a local copy does with each delta. It accepts the service's own
// reserved keys (ValidateEffective), so a client's copy shows conflicts
// exactly as the server's does. On error data may be partly changed;
// callers that need atomicity apply to a copy.
//
// Effective ops only ever hold set, unset, inc, ins and del (text edits by
// id, applied as the server placed them; see text.go): the server sends the
// array an add or remove produced, and a resolve as the set and the
// conflicts it clears. ApplyPlain also takes add, remove and resolve, with
// the server's meaning, for a client that applies its own pending ops to
// its copy before the server acknowledges them.
func ApplyPlain(data map[string]any, ops []FieldOp) error {
	for _, op := range ops {
		if err := op.ValidateEffective(); err != nil {
			return err
		}
		if op.Op == KindIns || op.Op == KindDel {
			if _, _, err := applyText(data, op, "", false, nil); err != nil {
				return err
			}
			continue
		}
		v, del, err := decodeValue(op)
		if err != nil {
			return err
		}
		dropText(data, op.Path, nil)
		segs := splitPath(op.Path)
		switch op.Op {
		case KindSet, KindUnset:
			writePath(data, segs, v, del, false, nil)
		case KindResolve:
			writePath(data, segs, v, del, false, nil)
			if m, ok := data[ConflictsKey].(map[string]any); ok {
				if next, changed := withoutConflicts(m, op.Path); changed {
					writePath(data, []string{ConflictsKey}, next, len(next) == 0, false, nil)
				}
			}
		default:
			if _, err := applyRelative(data, op, v, nil); err != nil {
				return err
			}
		}
	}
	return nil
}

// decodeValue decodes an op's value. del reports a removal (unset, or a
// resolve without a value).
func decodeValue(op FieldOp) (v any, del bool, err error) {
	switch op.Op {
	case KindUnset:
		return nil, true, nil
	case KindResolve:
		if len(op.Value) == 0 {
			return nil, true, nil
		}
	}
	if err := json.Unmarshal(op.Value, &v); err != nil {
		return nil, false, fmt.Errorf("%w: %s %q: %v", ErrInvalidOp, op.Op, op.Path, err)
	}
	return v, false, nil
}

// recorder is told about a key of a map just before it changes, so the
// change can be undone. nil records nothing.
type recorder func(m map[string]any, k string)

func splitPath(p string) []string { return strings.Split(p, ".") }

// Lookup returns the value at the dot path in data and whether it exists,
// without splitting the path. It is the one path reader of the schema, the
// access rules and the queries.
func Lookup(data map[string]any, path string) (any, bool) {
	if data == nil {
		return nil, false
	}
	m := data
	start := 0
	for i := 0; i < len(path); i++ {
		if path[i] == '.' {
			child, ok := m[path[start:i]].(map[string]any)
			if !ok {
				return nil, false
			}
			m, start = child, i+1
		}
	}
	v, ok := m[path[start:]]
	return v, ok
}

// getPath returns the value at segs and whether it exists.
func getPath(data map[string]any, segs []string) (any, bool) {
	m := data
	for _, s := range segs[:len(segs)-1] {
		child, ok := m[s].(map[string]any)
		if !ok {
			return nil, false
		}
		m = child
	}
	v, ok := m[segs[len(segs)-1]]
	return v, ok
}

// writePath sets (or, with del, removes) the value at segs. A set creates
// missing intermediate objects and replaces non-object ones; so does a
// removal with vivify, while a plain removal below a missing object does
// nothing. rec sees the one key that holds everything the write changes: the
// first intermediate it creates, or the leaf.
func writePath(data map[string]any, segs []string, v any, del, vivify bool, rec recorder) {
	m := data
	for i, s := range segs[:len(segs)-1] {
		child, ok := m[s].(map[string]any)
		if !ok {
			if del && !vivify {
				return
			}
			if rec != nil {
				rec(m, s)
			}
			if del {
				m[s] = nest(segs[i+1:len(segs)-1], map[string]any{})
			} else {
				m[s] = nest(segs[i+1:], v)
			}
			return
		}
		m = child
	}
	leaf := segs[len(segs)-1]
	if del {
		if _, ok := m[leaf]; !ok {
			return
		}
	}
	if rec != nil {
		rec(m, leaf)
	}
	if del {
		delete(m, leaf)
	} else {
		m[leaf] = v
	}
}

// missingObject returns the length of the shortest prefix of segs (leaf
// excluded) that is not an object in data, or 0 if all are objects.
func missingObject(data map[string]any, segs []string) int {
	m := data
	for i, s := range segs[:len(segs)-1] {
		child, ok := m[s].(map[string]any)
		if !ok {
			return i + 1
		}
		m = child
	}
	return 0
}

// nest wraps v in objects along segs: nest([a b], v) = {a: {b: v}};
// nest([], v) = v, which must then be an object.
func nest(segs []string, v any) map[string]any {
	if len(segs) == 0 {
		return v.(map[string]any)
	}
	out := map[string]any{segs[len(segs)-1]: v}
	for i := len(segs) - 2; i >= 0; i-- {
		out = map[string]any{segs[i]: out}
	}
	return out
}

// applyRelative applies an inc, add or remove to data. changed is false when
// the op has nothing to do (removing from a missing set).
func applyRelative(data map[string]any, op FieldOp, v any, rec recorder) (changed bool, err error) {
	segs := splitPath(op.Path)
	cur, _ := getPath(data, segs)
	var next any
	switch op.Op {
	case KindInc:
		n, _ := v.(float64)
		switch c := cur.(type) {
		case nil:
			next = n
		case float64:
			sum := c + n
			if math.IsInf(sum, 0) {
				return false, fmt.Errorf("%w: inc %q overflows", ErrInvalidOp, op.Path)
			}
			next = sum
		default:
			return false, fmt.Errorf("%w: inc %q: field is not a number", ErrInvalidOp, op.Path)
		}
	case KindAdd, KindRemove:
		var set []any
		switch c := cur.(type) {
		case nil:
			if op.Op == KindRemove {
				return false, nil
			}
		case []any:
			set = c
		default:
			return false, fmt.Errorf("%w: %s %q: field is not a set", ErrInvalidOp, op.Op, op.Path)
		}
		if op.Op == KindAdd {
			next = setAdd(set, v)
		} else {
			next = setRemove(set, v)
		}
	default:
		return false, fmt.Errorf("%w: %s is not a relative op", ErrInvalidOp, op.Op)
	}
	writePath(data, segs, next, false, false, rec)
	return true, nil
}

// canonical returns the canonical JSON encoding of a value (object keys
// sorted), which is how set elements are compared and ordered.
func canonical(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprintf("%#v", v)
	}
	return string(b)
}

// A set is a JSON array kept in canonical order without duplicates. Whatever
// order adds and removes arrive in, the same elements give the same array.
type keyed struct {
	key string
	v   any
}

func normalize(set []any, extra int) []keyed {
	ks := make([]keyed, 0, len(set)+extra)
	for _, e := range set {
		ks = append(ks, keyed{canonical(e), e})
	}
	slices.SortStableFunc(ks, func(a, b keyed) int { return strings.Compare(a.key, b.key) })
	return slices.CompactFunc(ks, func(a, b keyed) bool { return a.key == b.key })
}

func setAdd(set []any, v any) []any {
	ks := normalize(set, 1)
	k := canonical(v)
	i, found := slices.BinarySearchFunc(ks, k, func(e keyed, k string) int { return strings.Compare(e.key, k) })
	if !found {
		ks = slices.Insert(ks, i, keyed{k, v})
	}
	return values(ks)
}

func setRemove(set []any, v any) []any {
	ks := normalize(set, 0)
	k := canonical(v)
	if i, found := slices.BinarySearchFunc(ks, k, func(e keyed, k string) int { return strings.Compare(e.key, k) }); found {
		ks = slices.Delete(ks, i, i+1)
	}
	return values(ks)
}

func values(ks []keyed) []any {
	out := make([]any, len(ks))
	for i, e := range ks {
		out[i] = e.v
	}
	return out
}

func jsonEqual(a, b any) bool { return canonical(a) == canonical(b) }

// isUnder reports whether k is path itself or lies below it.
func isUnder(k, path string) bool {
	return k == path || (len(k) > len(path) && k[:len(path)] == path && k[len(path)] == '.')
}

func cloneMap(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = CloneValue(v)
	}
	return out
}

// CloneValue returns a deep copy of a decoded JSON value: its objects and
// arrays are new, so changing the copy leaves v as it was.
func CloneValue(v any) any {
	switch t := v.(type) {
	case map[string]any:
		return cloneMap(t)
	case []any:
		out := make([]any, len(t))
		for i, e := range t {
			out[i] = CloneValue(e)
		}
		return out
	}
	return v
}
