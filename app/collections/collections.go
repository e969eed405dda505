// Package collections is the schema of the collections: per collection,
// its conflict policy, limits, field rules, access roles, read rules and
// state machines (approval workflows). It checks document changes against
// the rules and evaluates what each reader may see. It is pure: no file
// I/O and no file format. Package schemafile reads the collections file
// into it, building each collection with the validation API here
// (Field.Validate, Collection.Validate, NewConfig).
//
// The format of the file is documented in config/collections.yaml (the
// shipped example) and docs/conflicts.md.
package collections

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/open-autoglm/autoglm/app/internal/errcode"
	"github.com/open-autoglm/autoglm/app/merge"
)

// Sentinel errors. The rule errors carry their wire codes (errcode.Coded),
// which core.CodeOf reads: ErrFieldRule → field_rule, ErrInvalidTransition →
// invalid_transition, ErrForbidden (and so ErrForbiddenTransition,
// ErrForbiddenField) → forbidden.
var (
	// ErrInvalidConfig: the schema breaks an invariant (a *SchemaError), or
	// the file it was read from is malformed (a schemafile.LoadError).
	ErrInvalidConfig = errors.New("collections: invalid config")
	// ErrFieldRule: a field breaks its rule (type, required, max_length,
	// min, max, enum, set).
	ErrFieldRule = errcode.New("field_rule", "field rule violated")
	// ErrInvalidTransition: a state field moved to a state that is not
	// declared, along a transition that is not declared, or away from the
	// initial state on creation.
	ErrInvalidTransition = errcode.New("invalid_transition", "invalid state transition")
	// ErrForbidden: the caller's roles do not allow the change.
	ErrForbidden = errcode.New("forbidden", "forbidden")
	// ErrForbiddenTransition: the transition exists, but not for the
	// caller's roles. It wraps ErrForbidden.
	ErrForbiddenTransition = fmt.Errorf("%w: transition not allowed for these roles", ErrForbidden)
	// ErrForbiddenField: the field is writable only by other roles. It
	// wraps ErrForbidden.
	ErrForbiddenField = fmt.Errorf("%w: field not writable with these roles", ErrForbidden)
)

// Default limits, the same as the server's own defaults.
const (
	DefaultMaxDocBytes = 1 << 20
	DefaultMaxOps      = 256
)

// Limits bound one collection's documents and writes.
type Limits struct {
	MaxDocBytes int // encoded size of a stored document
	MaxOps      int // field operations in one op
}

// Type is a field's JSON type.
type Type string

// Field types. A set is an array without duplicates (the add/remove ops
// keep it so). A text is a string that merges character by character (ins
// and del ops; docs/conflicts.md, "Text fields").
const (
	TypeAny     Type = ""
	TypeString  Type = "string"
	TypeNumber  Type = "number"
	TypeInteger Type = "integer"
	TypeBool    Type = "bool"
	TypeObject  Type = "object"
	TypeArray   Type = "array"
	TypeSet     Type = "set"
	TypeText    Type = "text"
)

var types = []Type{TypeString, TypeNumber, TypeInteger, TypeBool, TypeObject, TypeArray, TypeSet, TypeText}

// Field is the rule for one field, addressed by its dot path.
type Field struct {
	Path       string
	Type       Type
	Required   bool
	MaxLength  int      // characters of a string or text, elements of an array or set; -1: no limit
	Min, Max   *float64 // bounds of a number
	Enum       []any    // allowed values (JSON scalars); empty: any
	WritableBy []string // roles that may change the field; empty: anyone who may write
	// ReadableBy lists the roles (and OwnerRole, the document's owner) that
	// may read the field and everything below it; empty: every reader of
	// the document.
	ReadableBy []string
}

// Transition is one allowed move of a state field.
type Transition struct {
	From, To string
	Roles    []string // roles that may make it; empty: anyone who may write
}

// StateMachine constrains a string field to declared states and moves.
type StateMachine struct {
	Field       string
	Initial     string
	States      []string
	Transitions []Transition
}

// Collection is the configuration of one collection.
type Collection struct {
	Name       string
	Policy     merge.Policy
	Limits     Limits
	OwnerField string   // path holding the owner's id; only the owner may write (enforced by auth)
	ReadRoles  []string // empty: anyone authenticated
	WriteRoles []string // empty: anyone authenticated
	// Rows are the row rules (read_rules); nil: every document is readable
	// by whoever passes ReadRoles.
	Rows *ReadRules
	// Fields and StateMachines are keyed by path.
	Fields        map[string]*Field
	StateMachines map[string]*StateMachine
	// Declared is false for the default used for an unknown collection.
	Declared bool

	readable  []string // sorted paths of the fields with ReadableBy
	rulePaths []string // document fields the read rules look at
}

// Webhook is an endpoint declared in the collections file. Its signing
// secret is read from the environment variable SecretEnv, never from the
// file.
type Webhook struct {
	ID        string
	URL       string
	SecretEnv string
}

// Integration is what a collection sends out of the service. It is not
// part of the schema: the collections file declares it beside the schema,
// the loader reads it into Config.Integrations, and the events and webhooks
// packages consume it.
type Integration struct {
	// Events publishes an integration event (a CloudEvent with the change
	// summary) for every committed change; see docs/events.md.
	Events bool
	// Webhooks receive every change of the collection (see docs/events.md).
	Webhooks []Webhook
}

// Integrations are the integrations of the declared collections, by name;
// a collection that has none is absent.
type Integrations map[string]Integration

// Events reports whether collection publishes integration events.
func (in Integrations) Events(collection string) bool { return in[collection].Events }

// Config is a loaded collections file.
type Config struct {
	File string
	// AllowUnknown tells whether collections the file does not declare may
	// be used (with the defaults). It is true unless the file says
	// allow_unknown: false.
	AllowUnknown bool
	Defaults     Collection
	// Integrations are the collections' events and webhooks.
	Integrations Integrations
	collections  map[string]*Collection
}

// Default returns the configuration used without a file: every collection
// is lww with the default limits, and unknown collections are allowed.
func Default() *Config {
	return &Config{
		AllowUnknown: true,
		Defaults:     Collection{Policy: merge.LWW, Limits: Limits{MaxDocBytes: DefaultMaxDocBytes, MaxOps: DefaultMaxOps}},
		collections:  map[string]*Collection{},
	}
}

// Collection returns the configuration of a collection and whether the file
// declares it. An undeclared collection gets the defaults (lww with the
// default limits, no rules); whether it may be used at all is AllowUnknown.
func (c *Config) Collection(name string) (*Collection, bool) {
	if col, ok := c.collections[name]; ok {
		return col, true
	}
	d := c.Defaults
	d.Name = name
	d.Declared = false
	return &d, false
}

// Names lists the declared collections, sorted.
func (c *Config) Names() []string { return slices.Sorted(maps.Keys(c.collections)) }

// Policy returns a collection's conflict policy (the defaults' for an
// undeclared one). Its signature fits a lookup the merge engine takes.
func (c *Config) Policy(collection string) merge.Policy {
	col, _ := c.Collection(collection)
	return col.Policy
}

// TextFields returns the paths of the collection's text fields (nil when
// there are none), as the merge policies take them (merge.Input.Text).
func (c *Collection) TextFields() map[string]bool {
	var out map[string]bool
	for p, f := range c.Fields {
		if f.Type == TypeText {
			if out == nil {
				out = map[string]bool{}
			}
			out[p] = true
		}
	}
	return out
}

// CanRead reports whether a caller with roles may read the collection.
func (c *Collection) CanRead(roles []string) bool { return allowed(c.ReadRoles, roles) }

// CanWrite reports whether a caller with roles may write the collection.
func (c *Collection) CanWrite(roles []string) bool { return allowed(c.WriteRoles, roles) }

// allowed: an empty list allows everyone, else one role must match.
func allowed(need, have []string) bool {
	if len(need) == 0 {
		return true
	}
	for _, r := range have {
		if slices.Contains(need, r) {
			return true
		}
	}
	return false
}

// CheckError is a document change refused by a rule. It wraps one of the
// sentinels (ErrFieldRule, ErrInvalidTransition, ErrForbiddenTransition,
// ErrForbiddenField).
type CheckError struct {
	Field  string // path of the field
	From   string // for transitions: the state before ("" on creation)
	To     string // for transitions: the state requested
	Reason string
	Err    error
}

func (e *CheckError) Error() string { return e.Field + ": " + e.Reason }

// Unwrap returns the sentinel.
func (e *CheckError) Unwrap() error { return e.Err }

// Details names the refused field and, for a transition, its two states.
func (e *CheckError) Details() any {
	d := map[string]any{"field": e.Field}
	if e.From != "" || e.To != "" {
		d["from"], d["to"] = e.From, e.To
	}
	return d
}

// Check validates a change of one document of the collection: before is the
// data before the change (nil when the document is being created), after
// the data the change would produce, roles the caller's roles. It checks
// every field rule against after, the writable_by roles of every field the
// change touches, and every state machine's move. Keys starting with '_'
// (the service's own) are never checked. The first failure is returned, in
// path order, as a *CheckError.
func (c *Collection) Check(before, after map[string]any, roles []string) error {
	for _, p := range slices.Sorted(maps.Keys(c.StateMachines)) {
		if err := c.StateMachines[p].check(before, after, roles); err != nil {
			return err
		}
	}
	for _, p := range slices.Sorted(maps.Keys(c.Fields)) {
		f := c.Fields[p]
		if err := f.check(after); err != nil {
			return err
		}
		if len(f.WritableBy) > 0 && !allowed(f.WritableBy, roles) {
			bv, bok := merge.Lookup(before, p)
			av, aok := merge.Lookup(after, p)
			if bok != aok || bok && !jsonEqual(bv, av) {
				return &CheckError{Field: p, Reason: fmt.Sprintf("only %v may change it", f.WritableBy), Err: ErrForbiddenField}
			}
		}
	}
	return nil
}

// Snapshot returns the part of data that Check reads from before: the
// values of the state-machine fields and of the fields limited by
// writable_by, copied. A caller that changes the document in place takes
// it before the change and passes it to Check as before. It returns nil
// for nil data (a document being created).
func (c *Collection) Snapshot(data map[string]any) map[string]any {
	if data == nil {
		return nil
	}
	out := map[string]any{}
	keep := func(p string) {
		v, ok := merge.Lookup(data, p)
		if !ok {
			return
		}
		m := out
		segs := strings.Split(p, ".")
		for _, s := range segs[:len(segs)-1] {
			child, ok := m[s].(map[string]any)
			if !ok {
				child = map[string]any{}
				m[s] = child
			}
			m = child
		}
		m[segs[len(segs)-1]] = merge.CloneValue(v)
	}
	for p := range c.StateMachines {
		keep(p)
	}
	for p, f := range c.Fields {
		if len(f.WritableBy) > 0 {
			keep(p)
		}
	}
	return out
}

func (f *Field) check(data map[string]any) error {
	fail := func(format string, args ...any) error {
		return &CheckError{Field: f.Path, Reason: fmt.Sprintf(format, args...), Err: ErrFieldRule}
	}
	v, ok := merge.Lookup(data, f.Path)
	if !ok {
		if f.Required {
			return fail("is required")
		}
		return nil
	}
	if f.Type != TypeAny && !hasType(v, f.Type) {
		return fail("want %s, got %s", f.Type, typeName(v))
	}
	if f.MaxLength >= 0 {
		n := -1
		switch t := v.(type) {
		case string:
			n = utf8.RuneCountInString(t)
		case []any:
			n = len(t)
		}
		if n > f.MaxLength {
			return fail("length %d over max_length %d", n, f.MaxLength)
		}
	}
	if n, isNum := v.(float64); isNum {
		if f.Min != nil && n < *f.Min {
			return fail("%v below min %v", n, *f.Min)
		}
		if f.Max != nil && n > *f.Max {
			return fail("%v above max %v", n, *f.Max)
		}
	}
	if len(f.Enum) > 0 && !slices.ContainsFunc(f.Enum, func(e any) bool { return jsonEqual(e, v) }) {
		return fail("%s is not one of %s", ValueText(v), ValueText(f.Enum))
	}
	if f.Type == TypeSet {
		seen := map[string]bool{}
		for _, e := range v.([]any) {
			k := ValueText(e)
			if seen[k] {
				return fail("set holds %s twice", k)
			}
			seen[k] = true
		}
	}
	return nil
}

func (m *StateMachine) check(before, after map[string]any, roles []string) error {
	bv, bok := merge.Lookup(before, m.Field)
	av, aok := merge.Lookup(after, m.Field)
	from, _ := bv.(string)
	fail := func(err error, to, format string, args ...any) error {
		return &CheckError{Field: m.Field, From: from, To: to, Reason: fmt.Sprintf(format, args...), Err: err}
	}
	if !aok {
		if bok {
			return fail(ErrInvalidTransition, "", "a state field cannot be removed")
		}
		return nil
	}
	to, isStr := av.(string)
	if !isStr || !slices.Contains(m.States, to) {
		return fail(ErrInvalidTransition, to, "%s is not a state (want one of %v)", ValueText(av), m.States)
	}
	if !bok {
		if to != m.Initial {
			return fail(ErrInvalidTransition, to, "must start at %q, not %q", m.Initial, to)
		}
		return nil
	}
	if from == to && jsonEqual(bv, av) {
		return nil
	}
	var declared *Transition
	for i, t := range m.Transitions {
		if t.From == from && t.To == to {
			declared = &m.Transitions[i]
			break
		}
	}
	if declared == nil {
		return fail(ErrInvalidTransition, to, "no transition from %q to %q", from, to)
	}
	if !allowed(declared.Roles, roles) {
		return fail(ErrForbiddenTransition, to, "%q → %q needs one of the roles %v", from, to, declared.Roles)
	}
	return nil
}

func hasType(v any, t Type) bool {
	switch t {
	case TypeString, TypeText:
		_, ok := v.(string)
		return ok
	case TypeNumber:
		_, ok := v.(float64)
		return ok
	case TypeInteger:
		n, ok := v.(float64)
		return ok && n == math.Trunc(n) && !math.IsInf(n, 0)
	case TypeBool:
		_, ok := v.(bool)
		return ok
	case TypeObject:
		_, ok := v.(map[string]any)
		return ok
	case TypeArray, TypeSet:
		_, ok := v.([]any)
		return ok
	}
	return true
}

func typeName(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "string"
	case float64:
		return "number"
	case bool:
		return "bool"
	case map[string]any:
		return "object"
	case []any:
		return "array"
	}
	return fmt.Sprintf("%T", v)
}
