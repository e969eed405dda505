package collections_test

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/open-autoglm/autoglm/app/collections"
)

// A state machine built in code is checked as the collections file's loader
// checks one: StateMachine.Validate names the rule at fault and the
// transition, and NewConfig refuses a collection whose machine breaks one.
func TestStateMachineValidate(t *testing.T) {
	tr := func(from, to string, roles ...string) collections.Transition {
		return collections.Transition{From: from, To: to, Roles: roles}
	}
	for _, tc := range []struct {
		name  string
		m     collections.StateMachine
		key   string
		index int
		msg   string // "" when valid
	}{
		{name: "Valid", m: collections.StateMachine{Initial: "a", States: []string{"a", "b"}, Transitions: []collections.Transition{tr("a", "b", "x"), tr("b", "a")}}},
		{name: "FixedAtInitial", m: collections.StateMachine{Initial: "a", States: []string{"a"}}},
		{name: "NoStates", m: collections.StateMachine{Initial: "a"}, key: "states", index: -1, msg: "needs a non-empty list of states"},
		{name: "EmptyState", m: collections.StateMachine{Initial: "a", States: []string{"a", ""}}, key: "states", index: 1, msg: "states: empty string"},
		{name: "StateTwice", m: collections.StateMachine{Initial: "a", States: []string{"a", "b", "a"}}, key: "states", index: 2, msg: `states: "a" listed twice`},
		{name: "NoInitial", m: collections.StateMachine{States: []string{"a"}}, key: "initial", index: -1, msg: `initial state "" is not declared in states`},
		{name: "InitialUndeclared", m: collections.StateMachine{Initial: "c", States: []string{"a", "b"}}, key: "initial", index: -1, msg: `initial state "c" is not declared in states`},
		{name: "FromUndeclared", m: collections.StateMachine{Initial: "a", States: []string{"a", "b"}, Transitions: []collections.Transition{tr("a", "b"), tr("z", "a")}},
			key: "from", index: 1, msg: `transition from undeclared state "z"`},
		{name: "ToUndeclared", m: collections.StateMachine{Initial: "a", States: []string{"a", "b"}, Transitions: []collections.Transition{tr("a", "c")}},
			key: "to", index: 0, msg: `transition to undeclared state "c"`},
		{name: "FromBeforeTo", m: collections.StateMachine{Initial: "a", States: []string{"a", "b"}, Transitions: []collections.Transition{tr("a", "c"), tr("z", "a")}},
			key: "from", index: 1, msg: `transition from undeclared state "z"`},
		{name: "ToItself", m: collections.StateMachine{Initial: "a", States: []string{"a", "b"}, Transitions: []collections.Transition{tr("a", "b"), tr("b", "b")}},
			key: "to", index: 1, msg: `transition from "b" to itself`},
		{name: "Twice", m: collections.StateMachine{Initial: "a", States: []string{"a", "b"}, Transitions: []collections.Transition{tr("a", "b"), tr("b", "a"), tr("a", "b", "x")}},
			key: "transitions", index: 2, msg: `transition "a" → "b" declared twice`},
		{name: "EmptyRole", m: collections.StateMachine{Initial: "a", States: []string{"a", "b"}, Transitions: []collections.Transition{tr("a", "b", "x", "")}},
			key: "roles", index: 0, msg: "roles: empty string"},
		{name: "RoleTwice", m: collections.StateMachine{Initial: "a", States: []string{"a", "b"}, Transitions: []collections.Transition{tr("a", "b", "x", "x")}},
			key: "roles", index: 0, msg: `roles: "x" listed twice`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.m.Field = "status"
			err := tc.m.Validate()
			if tc.msg == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			want := &collections.SchemaError{Path: "status", Key: tc.key, Index: tc.index, Msg: tc.msg}
			if diff := cmp.Diff(error(want), err); diff != "" || !errors.Is(err, collections.ErrInvalidConfig) {
				t.Fatalf("Validate (-want +got):\n%s", diff)
			}
			col := &collections.Collection{Name: "orders", StateMachines: map[string]*collections.StateMachine{"status": &tc.m}}
			_, err = collections.NewConfig("", false, collections.Collection{}, []*collections.Collection{col}, nil)
			want.Collection = "orders"
			if diff := cmp.Diff(error(want), err); diff != "" {
				t.Fatalf("NewConfig (-want +got):\n%s", diff)
			}
			if want := "collection orders: field status: " + tc.msg; err.Error() != want {
				t.Fatalf("NewConfig: %q, want %q", err, want)
			}
		})
	}
}

// The collection-level rules of a state machine built in code: its field
// path, the type the field is declared with, and the field it names.
func TestCollectionStateMachines(t *testing.T) {
	machine := func(field string) *collections.StateMachine {
		return &collections.StateMachine{Field: field, Initial: "a", States: []string{"a"}}
	}
	for _, tc := range []struct {
		name string
		col  collections.Collection
		msg  string
	}{
		{"ReservedPath", collections.Collection{StateMachines: map[string]*collections.StateMachine{"_s": machine("_s")}},
			`state machine field "_s": want a dot path of keys not starting with '_'`},
		{"NumberField", collections.Collection{Fields: map[string]*collections.Field{"s": {Path: "s", Type: collections.TypeNumber, MaxLength: -1}},
			StateMachines: map[string]*collections.StateMachine{"s": machine("s")}},
			`state machine field "s" is declared as number; states are strings`},
		{"OtherField", collections.Collection{StateMachines: map[string]*collections.StateMachine{"s": machine("t")}},
			"the state machine declared for this field is missing or names another field"},
		{"Missing", collections.Collection{StateMachines: map[string]*collections.StateMachine{"s": nil}},
			"the state machine declared for this field is missing or names another field"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.col.Name = "orders"
			err := tc.col.Validate()
			var se *collections.SchemaError
			if !errors.As(err, &se) || se.Msg != tc.msg || se.Collection != "orders" {
				t.Fatalf("Validate: %v, want %q", err, tc.msg)
			}
		})
	}
	ok := collections.Collection{Name: "orders", Fields: map[string]*collections.Field{"s": {Path: "s", Type: collections.TypeString, MaxLength: -1}},
		StateMachines: map[string]*collections.StateMachine{"s": machine("s")}}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
}
