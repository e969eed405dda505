package schemafile

import (
	"strings"
	"testing"
)

// The loader reports the machine's first mistake in file order, at its
// place: a transition entry's undeclared from states before its to states,
// and those before a transition of a state to itself.
func TestStateMachineFileOrder(t *testing.T) {
	for _, tc := range []struct{ text, msg string }{
		{"    - {from: [a, z], to: [a]}\n", `transition from undeclared state "z"`},
		{"    - {from: [a], to: [a, y]}\n", `transition to undeclared state "y"`},
		{"    - {from: [a, z], to: [y]}\n", `transition from undeclared state "z"`},
		{"    - {from: a, to: a}\n    - {from: z, to: b}\n", `transition from "a" to itself`},
	} {
		text := "collections:\n o:\n  state_machines:\n   s:\n    states: [a, b]\n    initial: a\n    transitions:\n" + tc.text
		_, err := Parse("f.yaml", []byte(text))
		if err == nil || !strings.HasPrefix(err.Error(), "f.yaml:8:") || !strings.HasSuffix(err.Error(), ": collection o: state machine s: "+tc.msg) {
			t.Fatalf("%s: %v, want line 8 and %q", tc.text, err, tc.msg)
		}
	}
}
