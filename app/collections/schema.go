package collections

import (
	"encoding/json"
	"fmt"
	"maps"
	"regexp"
	"slices"

	"github.com/open-autoglm/autoglm/app/merge"
)

// SchemaError is a schema that breaks one of its invariants. Key names the
// rule at fault (such as "max_length", "enum", "max"); for a list, Index is
// the element at fault (-1: the list as a whole). A loader uses Key and
// Index to point at the place in its file. It wraps ErrInvalidConfig.
type SchemaError struct {
	Collection string // "" when not known
	Path       string // the field at fault, if any
	Key        string
	Index      int
	Msg        string
}

func (e *SchemaError) Error() string {
	s := e.Msg
	if e.Path != "" {
		s = "field " + e.Path + ": " + s
	}
	if e.Collection != "" {
		s = "collection " + e.Collection + ": " + s
	}
	return s
}

// Unwrap makes errors.Is(err, ErrInvalidConfig) hold.
func (e *SchemaError) Unwrap() error { return ErrInvalidConfig }

// collectionName is the service's collection-name syntax.
var collectionName = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,63}$`)

// ValidName reports whether name follows the service's syntax for
// collection names ([a-z][a-z0-9_-]{0,63}), so a collection declared under
// it is addressable.
func ValidName(name string) bool { return collectionName.MatchString(name) }

// Valid reports whether t is one of the field types (TypeAny included).
func (t Type) Valid() bool { return t == TypeAny || slices.Contains(types, t) }

// Validate checks that the field's rules fit together: max_length only on
// strings, texts, arrays and sets; no enum on a text; min and max only on
// numbers, and min not above max; every enum value of the field's type. It
// returns a *SchemaError whose Key names the rule at fault (and, for an
// enum value, its Index).
func (f *Field) Validate() error {
	fail := func(key string, i int, format string, args ...any) error {
		return &SchemaError{Path: f.Path, Key: key, Index: i, Msg: fmt.Sprintf(format, args...)}
	}
	number := f.Type == TypeNumber || f.Type == TypeInteger
	switch {
	case f.MaxLength >= 0 && f.Type != TypeString && f.Type != TypeText && f.Type != TypeArray && f.Type != TypeSet:
		return fail("max_length", -1, "max_length needs type string, text, array or set")
	case len(f.Enum) > 0 && f.Type == TypeText:
		return fail("enum", -1, "a text field takes no enum (use type string)")
	case f.Min != nil && !number:
		return fail("min", -1, "min needs type number or integer")
	case f.Max != nil && !number:
		return fail("max", -1, "max needs type number or integer")
	case f.Min != nil && f.Max != nil && *f.Min > *f.Max:
		return fail("max", -1, "max %v is below min %v", *f.Max, *f.Min)
	}
	if f.Type != TypeAny {
		for i, e := range f.Enum {
			if !hasType(e, f.Type) {
				return fail("enum", i, "enum value %s is not of type %s", ValueText(e), f.Type)
			}
		}
	}
	return nil
}

// Validate checks that the state machine fits together: at least one
// state, each named once and not empty; an initial state among them; every
// transition between two declared states, not from a state to itself, and
// declared once, with its roles named once and not empty. It returns a
// *SchemaError whose Key names the rule at fault: "states" (Index: the
// state, or -1 for the list), "initial", or, with Index the transition,
// "from", "to" (an undeclared state, or the state it comes from),
// "transitions" (declared twice) or "roles". Undeclared states are looked
// for first, every from before every to, then each transition in turn.
func (m *StateMachine) Validate() error {
	fail := func(key string, i int, format string, args ...any) error {
		return &SchemaError{Path: m.Field, Key: key, Index: i, Msg: fmt.Sprintf(format, args...)}
	}
	if len(m.States) == 0 {
		return fail("states", -1, "needs a non-empty list of states")
	}
	if err := distinct(m.States, func(i int, msg string) error { return fail("states", i, "states: %s", msg) }); err != nil {
		return err
	}
	if !slices.Contains(m.States, m.Initial) {
		return fail("initial", -1, "initial state %q is not declared in states", m.Initial)
	}
	for i, t := range m.Transitions {
		if !slices.Contains(m.States, t.From) {
			return fail("from", i, "transition from undeclared state %q", t.From)
		}
	}
	for i, t := range m.Transitions {
		if !slices.Contains(m.States, t.To) {
			return fail("to", i, "transition to undeclared state %q", t.To)
		}
	}
	for i, t := range m.Transitions {
		if t.From == t.To {
			return fail("to", i, "transition from %q to itself", t.From)
		}
		if slices.ContainsFunc(m.Transitions[:i], func(x Transition) bool { return x.From == t.From && x.To == t.To }) {
			return fail("transitions", i, "transition %q → %q declared twice", t.From, t.To)
		}
		if err := distinct(t.Roles, func(_ int, msg string) error { return fail("roles", i, "roles: %s", msg) }); err != nil {
			return err
		}
	}
	return nil
}

// distinct checks that a list of names has no empty and no repeated name;
// fail builds the error for the i-th.
func distinct(names []string, fail func(i int, msg string) error) error {
	for i, s := range names {
		if s == "" {
			return fail(i, "empty string")
		}
		if slices.Contains(names[:i], s) {
			return fail(i, fmt.Sprintf("%q listed twice", s))
		}
	}
	return nil
}

// CheckStateField checks that path p can hold a state machine of c: a dot
// path of keys not starting with '_', and, if c declares the field, a string
// (or untyped) one. It returns a *SchemaError with Key "state_machines".
func (c *Collection) CheckStateField(p string) error {
	fail := func(format string, args ...any) error {
		return &SchemaError{Collection: c.Name, Key: "state_machines", Index: -1, Msg: fmt.Sprintf(format, args...)}
	}
	if merge.ValidatePath(p) != nil {
		return fail("state machine field %q: want a dot path of keys not starting with '_'", p)
	}
	if f, ok := c.Fields[p]; ok && f.Type != TypeString && f.Type != TypeAny {
		return fail("state machine field %q is declared as %s; states are strings", p, f.Type)
	}
	return nil
}

// Validate checks the collection's fields (Field.Validate), its state
// machines (CheckStateField, StateMachine.Validate, each keyed by its own
// field) and its read rules against the rest of it, and indexes the rules
// for ViewOf, RulePaths and Touches: rules that name the owner (read_rules
// owner, or owner in a field's readable_by) need an owner_field. Call it
// once the collection's fields, state machines and read rules are set, and
// again after changing them. It returns a *SchemaError (Key "read_rules"
// for the owner rule).
func (c *Collection) Validate() error {
	c.readable, c.rulePaths = nil, nil
	for _, p := range slices.Sorted(maps.Keys(c.Fields)) {
		if err := c.Fields[p].Validate(); err != nil {
			err.(*SchemaError).Collection = c.Name
			return err
		}
	}
	for _, p := range slices.Sorted(maps.Keys(c.StateMachines)) {
		m := c.StateMachines[p]
		if err := c.CheckStateField(p); err != nil {
			return err
		}
		if m == nil || m.Field != p {
			return &SchemaError{Collection: c.Name, Path: p, Key: "state_machines", Index: -1,
				Msg: "the state machine declared for this field is missing or names another field"}
		}
		if err := m.Validate(); err != nil {
			err.(*SchemaError).Collection = c.Name
			return err
		}
	}
	ownerUsed := c.Rows != nil && c.Rows.Owner
	for p, f := range c.Fields {
		if len(f.ReadableBy) > 0 {
			c.readable = append(c.readable, p)
			ownerUsed = ownerUsed || slices.Contains(f.ReadableBy, OwnerRole)
		}
	}
	slices.Sort(c.readable)
	if ownerUsed && c.OwnerField == "" {
		return &SchemaError{Collection: c.Name, Key: "read_rules", Index: -1, Msg: "read rules name the owner, but the collection has no owner_field"}
	}
	if ownerUsed {
		c.rulePaths = append(c.rulePaths, c.OwnerField)
	}
	if c.Rows != nil {
		for p := range c.Rows.Claims {
			if !slices.Contains(c.rulePaths, p) {
				c.rulePaths = append(c.rulePaths, p)
			}
		}
	}
	slices.Sort(c.rulePaths)
	return nil
}

// NewConfig builds a config from its collections, which it marks declared
// and validates (Collection.Validate); their names must follow ValidName
// and be distinct. An undeclared collection gets defaults, and may be used
// when allowUnknown is set. file names where the config came from ("" when
// it was built in code). Its errors are *SchemaError.
func NewConfig(file string, allowUnknown bool, defaults Collection, cols []*Collection, in Integrations) (*Config, error) {
	c := &Config{File: file, AllowUnknown: allowUnknown, Defaults: defaults, Integrations: in,
		collections: make(map[string]*Collection, len(cols))}
	for _, col := range cols {
		switch {
		case !ValidName(col.Name):
			return nil, &SchemaError{Index: -1, Msg: fmt.Sprintf("collection name %q: want [a-z][a-z0-9_-]{0,63}", col.Name)}
		case c.collections[col.Name] != nil:
			return nil, &SchemaError{Collection: col.Name, Index: -1, Msg: "declared twice"}
		}
		if err := col.Validate(); err != nil {
			return nil, err
		}
		col.Declared = true
		c.collections[col.Name] = col
	}
	return c, nil
}

// ValueText is a value as error messages show it: its JSON.
func ValueText(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

func jsonEqual(a, b any) bool { return ValueText(a) == ValueText(b) }
