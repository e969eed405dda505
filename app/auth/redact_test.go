package auth_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/open-autoglm/autoglm/app/auth"
	"github.com/open-autoglm/autoglm/app/collections"
	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/merge"
)

func TestRedact(t *testing.T) {
	cfg, err := collections.Parse("test.yaml", []byte(`
collections:
  vault:
    policy: strict
    read_roles: [reader]
    write_roles: [reader, writer]
    fields:
      size: {type: number, max: 10}
    state_machines:
      status:
        states: [draft, secret-state, done]
        initial: draft
        transitions:
          - {from: draft, to: secret-state}
`))
	if err != nil {
		t.Fatal(err)
	}
	p := auth.Policy{Collections: cfg, Enforce: true}
	reader, writer := auth.Identity{Subject: "r", Roles: []string{"reader"}}, auth.Identity{Subject: "w", Roles: []string{"writer"}}

	conflict := &merge.ConflictError{Base: 1, Current: 2, Theirs: map[string]any{"title": "secret"},
		Yours:     []merge.FieldOp{{Op: merge.KindUnset, Path: "secret"}},
		Conflicts: map[string][]merge.Candidate{"title": {{Value: json.RawMessage(`"secret"`), By: "x", V: 2}}}}
	transition := &collections.CheckError{Field: "status", From: "secret-state", To: "done", Reason: `no transition from "secret-state" to "done"`, Err: collections.ErrInvalidTransition}
	rule := fmt.Errorf("apply: %w", &collections.CheckError{Field: "size", Reason: "11 above max 10", Err: collections.ErrFieldRule})
	invalid := fmt.Errorf("%w: inc of \"secret\" (a string)", merge.ErrInvalidOp)
	tooLarge := core.Errorf(core.CodeTooLarge, "document would be 123456 bytes (limit 1000)")
	precondition := &core.Error{Code: core.CodePreconditionFailed, Message: "document is at version 2, not 1", Details: map[string]any{"current": int64(2)}}

	cases := []struct {
		name    string
		err     error
		details string // JSON of the writer's details
	}{
		{"conflict", conflict, `{"base":1,"current":2}`},
		{"transition", transition, `{"field":"status"}`},
		{"field rule", rule, `{"field":"size"}`},
		{"invalid op", invalid, `null`},
		{"too large", tooLarge, `null`},
		{"precondition", precondition, `{"current":2}`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := p.Redact(reader, "vault", c.err); got != c.err {
				t.Fatalf("a reader's error changed: %v", got)
			}
			got := p.Redact(writer, "vault", c.err)
			if core.CodeOf(got) != core.CodeOf(c.err) {
				t.Fatalf("code %s, want %s", core.CodeOf(got), core.CodeOf(c.err))
			}
			d, _ := json.Marshal(core.DetailsOf(got))
			msg := core.PublicMessage(got)
			if string(d) != c.details || strings.Contains(msg, "secret") || strings.Contains(msg, "123456") || strings.Contains(msg, "11") {
				t.Fatalf("writer sees %q %s", msg, d)
			}
		})
	}
	if err := (auth.Policy{Collections: cfg}).Redact(writer, "vault", conflict); err != conflict {
		t.Fatalf("authentication off: %v", err)
	}
}
