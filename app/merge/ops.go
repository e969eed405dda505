// Package merge holds the field-operation algebra and the per-collection
// conflict policies. It is pure: no I/O, no clocks of its own, so every merge
// is deterministic and can be property-tested and fuzzed.
package merge

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors. Callers map them to wire codes in one place (core.CodeOf).
var (
	// ErrInvalidOp reports a field operation that is malformed or does not
	// fit the document (incrementing a string, a bad path, ...).
	ErrInvalidOp = errors.New("merge: invalid operation")
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
)

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

// Validate checks the operation's shape without looking at any document.
func (o FieldOp) Validate() error {
	if err := ValidatePath(o.Path); err != nil {
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
	case KindUnset:
		if len(o.Value) != 0 {
			return fmt.Errorf("%w: unset %q takes no value", ErrInvalidOp, o.Path)
		}
	case KindInc:
		var n float64
		if err := json.Unmarshal(o.Value, &n); err != nil {
			return fmt.Errorf("%w: inc %q needs a number", ErrInvalidOp, o.Path)
		}
	default:
		return fmt.Errorf("%w: unknown op %q", ErrInvalidOp, o.Op)
	}
	return nil
}

// ValidatePath checks a dot-separated field path: 1..MaxPathDepth non-empty
// keys, none starting with '_' (reserved for the service's own fields).
func ValidatePath(p string) error {
	if p == "" {
		return fmt.Errorf("%w: empty path", ErrInvalidOp)
	}
	segs := strings.Split(p, ".")
	if len(segs) > MaxPathDepth {
		return fmt.Errorf("%w: path %q deeper than %d", ErrInvalidOp, p, MaxPathDepth)
	}
	for _, s := range segs {
		if s == "" {
			return fmt.Errorf("%w: path %q has an empty key", ErrInvalidOp, p)
		}
		if s[0] == '_' {
			return fmt.Errorf("%w: path %q: keys starting with '_' are reserved", ErrInvalidOp, p)
		}
	}
	return nil
}
