// Package merge holds the field-operation algebra and the per-collection
// conflict policies. It is pure: no I/O, no clocks of its own, so every merge
// is deterministic and can be property-tested and fuzzed.
package merge

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/open-autoglm/autoglm/app/internal/errcode"
)

// Sentinel errors. Each carries its wire code (errcode.Coded), which
// core.CodeOf reads.
var (
	// ErrInvalidOp reports a field operation that is malformed or does not
	// fit the document (incrementing a string, a bad path, ...).
	ErrInvalidOp = errcode.New("invalid_op", "merge: invalid operation")
	// ErrConflict reports an op that the collection's policy refuses to
	// merge on its own: a strict op whose base version is not current, or a
	// manual resolve that has not seen every competing value. The error is
	// a *ConflictError carrying what the client needs to merge by hand.
	ErrConflict = errcode.New("conflict", "merge: conflict")
)

// Kind names a field operation.
type Kind string

// Field operation kinds.
const (
	KindSet    Kind = "set"    // replace the value at path
	KindUnset  Kind = "unset"  // remove the field at path
	KindInc    Kind = "inc"    // add a number to a counter at path
	KindAdd    Kind = "add"    // add an element to a set at path
	KindRemove Kind = "remove" // remove an element from a set at path
	// KindResolve settles a manual conflict at path with the chosen value
	// (no value: the field is removed) and clears the conflict. Under the
	// other policies it is a plain set or unset.
	KindResolve Kind = "resolve"
)

// ConflictsKey is the reserved top-level key under which the manual policy
// keeps open conflicts in the document's data, visible to every client.
const ConflictsKey = "_conflicts"

// MaxPathDepth bounds nesting of field paths.
const MaxPathDepth = 16

// FieldOp is one change to one field of a document. Paths are dot-separated
// object keys: "address.city".
type FieldOp struct {
	Op    Kind            `json:"op"`
	Path  string          `json:"path"`
	Value json.RawMessage `json:"value,omitempty"`
}

// Segments splits the path into its keys.
func (o FieldOp) Segments() []string { return strings.Split(o.Path, ".") }

// Validate checks an operation a client sent, without looking at any
// document. Keys starting with '_' are refused: they belong to the service.
func (o FieldOp) Validate() error { return o.validate(false) }

// ValidateEffective checks an operation the service produced (an effective
// op in a change). It is Validate without the reserved-key rule, because the
// service writes its own keys (ConflictsKey); it never accepts these from
// clients.
func (o FieldOp) ValidateEffective() error { return o.validate(true) }

func (o FieldOp) validate(reserved bool) error {
	if err := validatePath(o.Path, reserved); err != nil {
		return err
	}
	switch o.Op {
	case KindSet, KindAdd, KindRemove:
		if len(o.Value) == 0 {
			return fmt.Errorf("%w: %s %q needs a value", ErrInvalidOp, o.Op, o.Path)
		}
		if !json.Valid(o.Value) {
			return fmt.Errorf("%w: %s %q: value is not JSON", ErrInvalidOp, o.Op, o.Path)
		}
	case KindResolve:
		if len(o.Value) != 0 && !json.Valid(o.Value) {
			return fmt.Errorf("%w: resolve %q: value is not JSON", ErrInvalidOp, o.Path)
		}
	case KindUnset:
		if len(o.Value) != 0 {
			return fmt.Errorf("%w: unset %q takes no value", ErrInvalidOp, o.Path)
		}
	case KindInc:
		var n float64
		if err := json.Unmarshal(o.Value, &n); err != nil {
			return fmt.Errorf("%w: inc %q needs a number", ErrInvalidOp, o.Path)
		}
	case KindIns, KindDel:
		return validText(o)
	default:
		return fmt.Errorf("%w: unknown op %q", ErrInvalidOp, o.Op)
	}
	return nil
}

// ValidatePath checks a dot-separated field path a client may write:
// 1..MaxPathDepth non-empty keys, none starting with '_' (reserved for the
// service's own fields).
func ValidatePath(p string) error { return validatePath(p, false) }

func validatePath(p string, reserved bool) error {
	if p == "" {
		return fmt.Errorf("%w: empty path", ErrInvalidOp)
	}
	depth := 1
	start := 0
	for i := 0; i <= len(p); i++ {
		if i < len(p) && p[i] != '.' {
			continue
		}
		if i == start {
			return fmt.Errorf("%w: path %q has an empty key", ErrInvalidOp, p)
		}
		if !reserved && p[start] == '_' {
			return fmt.Errorf("%w: path %q: keys starting with '_' are reserved", ErrInvalidOp, p)
		}
		if i < len(p) {
			depth++
			if depth > MaxPathDepth {
				return fmt.Errorf("%w: path %q deeper than %d", ErrInvalidOp, p, MaxPathDepth)
			}
		}
		start = i + 1
	}
	return nil
}

// ConflictError is the rejection the strict policy (and a stale manual
// resolve) returns. It wraps ErrConflict and serialises as the details of a
// "conflict" error: the client merges theirs and yours by hand, rebases on
// current and retries.
type ConflictError struct {
	Base    int64 `json:"base"`    // the version the op was based on
	Current int64 `json:"current"` // the document's version now
	// Theirs holds the current value of every path the op touches, keyed
	// by path; a path that is absent from the document is absent here.
	Theirs map[string]any `json:"theirs"`
	// Yours is the op's field operations as sent.
	Yours []FieldOp `json:"yours"`
	// Conflicts lists, for a refused resolve, the open conflicts at and
	// below the resolved paths, including the values the client has not
	// seen yet.
	Conflicts map[string][]Candidate `json:"conflicts,omitempty"`
}

func (e *ConflictError) Error() string {
	if len(e.Conflicts) > 0 {
		return fmt.Sprintf("merge: conflict: resolve based on version %d has not seen every competing value (document is at version %d)", e.Base, e.Current)
	}
	return fmt.Sprintf("merge: conflict: op based on version %d, document is at version %d", e.Base, e.Current)
}

// Unwrap makes errors.Is(err, ErrConflict) hold.
func (e *ConflictError) Unwrap() error { return ErrConflict }

// Details is the error itself: base, current, theirs, yours are what a
// client needs to merge by hand.
func (e *ConflictError) Details() any { return e }
