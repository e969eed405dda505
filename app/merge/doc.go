package merge

import (
	"errors"
	"fmt"
	"maps"

	"github.com/open-autoglm/autoglm/app/clock"
)

// Policy names a collection's conflict policy (docs/conflicts.md).
type Policy string

// Conflict policies.
const (
	// LWW: per-field last-writer-wins by (HLC, client id). Writes of
	// different fields never conflict; a write of an object and a write
	// inside it are ordered by their stamps, so every delivery order of the
	// same sets and unsets gives the same document.
	LWW Policy = "lww"
	// CRDT: a field-level CRDT map. Registers are LWW as above; inc merges
	// by sum (every concurrent increment counts); add/remove treat an array
	// as an add-wins set; a set or unset of a field wins over increments and
	// set edits that did not see it. Every delivery order converges.
	CRDT Policy = "crdt"
	// Strict: optimistic locking. An op must be based on the current
	// version or it is refused with a *ConflictError.
	Strict Policy = "strict"
	// Manual: concurrent writes of the same field with different values are
	// kept side by side under ConflictsKey until a client resolves them.
	Manual Policy = "manual"
)

// Policies lists every policy, in documentation order.
func Policies() []Policy { return []Policy{LWW, CRDT, Strict, Manual} }

// ParsePolicy validates a policy name. The empty name is LWW, the default.
func ParsePolicy(s string) (Policy, error) {
	switch p := Policy(s); p {
	case "":
		return LWW, nil
	case LWW, CRDT, Strict, Manual:
		return p, nil
	}
	return "", fmt.Errorf("%w: unknown policy %q (want lww, crdt, strict or manual)", ErrInvalidOp, s)
}

// Stamp records the last whole-value write (set, unset or resolve) of one
// path: the author's HLC, the author, and the document version the write
// produced. The policies compare stamps by (HLC, author) to pick a winner and
// compare versions with an op's base version to tell whether its author had
// seen the write (concurrent edits).
type Stamp struct {
	HLC clock.Timestamp
	By  string
	V   int64
}

// wins reports whether s beats o in last-writer-wins order: the later HLC,
// then the greater author id.
func (s Stamp) wins(o Stamp) bool {
	c := s.HLC.Compare(o.HLC)
	return c > 0 || c == 0 && s.By > o.By
}

// Doc is the mergeable state of one document: its plain JSON data plus the
// per-field metadata the policies need. It is stored as core.StateRecord,
// which fixes its stored form apart from this type; its own JSON encoding
// (stamps as objects) is for tests and debugging only.
//
// Data holds only JSON types (map[string]any, []any, string, float64, bool,
// nil), exactly what a client holds after decoding the same document, so the
// effective ops Apply returns reproduce Data on a client's copy.
type Doc struct {
	Data map[string]any `json:"data"`
	// Stamps holds the last whole-value write of each path. An unset leaves
	// its stamp behind as a tombstone so that an older set cannot revive
	// the field. A stamp below a path is dropped when a newer write of the
	// path replaces it, so every live stamp is newer than its ancestors'.
	Stamps map[string]Stamp `json:"stamps,omitempty"`
	// Elems holds, for add-wins sets (crdt), which authors added each
	// element and at which version: path → element (canonical JSON) →
	// author → version. A remove only cancels the adds its author had seen;
	// an element is kept while an unseen add remains.
	Elems map[string]map[string]map[string]int64 `json:"elems,omitempty"`
	// TextDel holds, per text field, the version of its last delete: once
	// that is outside the op-log window, compaction may drop the field's
	// tombstones (CollectText). Clients never see it.
	TextDel map[string]int64 `json:"textdel,omitempty"`
}

// NewDoc returns an empty document state.
func NewDoc() *Doc { return &Doc{Data: map[string]any{}} }

// Clone returns a deep copy.
func (d *Doc) Clone() *Doc {
	return &Doc{Data: cloneMap(d.Data), Stamps: maps.Clone(d.Stamps), Elems: CloneElems(d.Elems), TextDel: maps.Clone(d.TextDel)}
}

// CloneElems deep-copies a document's set elements (Doc.Elems); a nil map
// stays nil at every level.
func CloneElems(e map[string]map[string]map[string]int64) map[string]map[string]map[string]int64 {
	if e == nil {
		return nil
	}
	out := make(map[string]map[string]map[string]int64, len(e))
	for p, es := range e {
		var ce map[string]map[string]int64
		if es != nil {
			ce = make(map[string]map[string]int64, len(es))
			for k, by := range es {
				ce[k] = maps.Clone(by)
			}
		}
		out[p] = ce
	}
	return out
}

// Input is one client operation as the policies see it.
type Input struct {
	Client string // author
	// HLC is the author's own stamp (after the server has checked it for
	// skew), not the server's receive time: offline edits keep the time they
	// were made. Every op of one client must carry a later HLC than the
	// client's previous op; ops in one Input share it and apply in order.
	HLC     clock.Timestamp
	Base    int64 // document version the author based the op on
	Current int64 // document version now; the op produces Current+1
	Ops     []FieldOp
	// Text holds the paths declared as text fields (collections): a set of
	// one of them replaces its text (docs/conflicts.md, "Text fields").
	// Paths that already hold text metadata are text fields too.
	Text map[string]bool
}

// Apply merges in into d under policy p and returns the effective field
// operations: what actually changed, in a form ApplyPlain reproduces on a
// plain copy of the data. On error d is unchanged.
//
// Apply does not copy the document: it changes d in place and undoes its
// changes if an op fails, so its cost is proportional to the op, not to
// the document.
func Apply(p Policy, d *Doc, in Input) ([]FieldOp, error) {
	eff, _, err := ApplyUndo(p, d, in)
	return eff, err
}

// ApplyUndo is Apply that also returns a function restoring d to its state
// before the call, for a caller that checks the result afterwards (say,
// against a size limit) and may still refuse it. undo must be called before
// any other change to d, if at all; it is nil when err is not.
func ApplyUndo(p Policy, d *Doc, in Input) (eff []FieldOp, undo func(), err error) {
	pol, err := ParsePolicy(string(p))
	if err != nil {
		return nil, nil, err
	}
	for i, op := range in.Ops {
		if err := op.Validate(); err != nil {
			return nil, nil, fmt.Errorf("op %d: %w", i, err)
		}
	}
	if d.Data == nil {
		d.Data = map[string]any{}
	}
	if pol == Strict && in.Base != in.Current {
		return nil, nil, &ConflictError{Base: in.Base, Current: in.Current, Theirs: theirs(d.Data, in.Ops), Yours: in.Ops}
	}
	a := applier{d: d, in: in, pol: pol, self: Stamp{HLC: in.HLC, By: in.Client, V: in.Current + 1}}
	a.eff = make([]FieldOp, 0, len(in.Ops))
	for i, op := range in.Ops {
		if err := a.apply(op); err != nil {
			a.rollback()
			var ce *ConflictError
			if errors.As(err, &ce) {
				return nil, nil, err
			}
			return nil, nil, fmt.Errorf("op %d: %w", i, err)
		}
	}
	return a.eff, a.rollback, nil
}

// theirs returns the current value of every path ops touch.
func theirs(data map[string]any, ops []FieldOp) map[string]any {
	out := make(map[string]any, len(ops))
	for _, op := range ops {
		if v, ok := getPath(data, splitPath(op.Path)); ok {
			out[op.Path] = CloneValue(v)
		}
	}
	return out
}
