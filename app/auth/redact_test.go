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
	p := enforced(t, `
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
`)
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
	if err := (auth.Policy{Collections: p.Collections}).Redact(writer, "vault", conflict); err != conflict {
		t.Fatalf("authentication off: %v", err)
	}
}

// A caller with a partial view of the document gets its refusals without
// the fields it may not read; a caller the row rules shut out gets what a
// caller without read access gets.
func TestRedactIn(t *testing.T) {
	p := enforced(t, `
collections:
  people:
    policy: strict
    owner_field: owner
    read_rules: {owner: true, roles: [staff]}
    fields:
      salary: {type: number, max: 10, readable_by: [owner, hr]}
`)
	doc := map[string]any{"owner": "ann", "salary": 5.0, "name": "Ann"}
	staff := auth.Identity{Subject: "sam", Roles: []string{"staff"}}
	ann := auth.Identity{Subject: "ann"}
	bob := auth.Identity{Subject: "bob"}
	conflict := &merge.ConflictError{Base: 1, Current: 2, Theirs: map[string]any{"salary": 5.0, "name": "Ann"},
		Yours:     []merge.FieldOp{{Op: merge.KindSet, Path: "salary", Value: json.RawMessage(`7`)}, {Op: merge.KindSet, Path: "name", Value: json.RawMessage(`"A"`)}},
		Conflicts: map[string][]merge.Candidate{"salary": {{Value: json.RawMessage(`5`), By: "x", V: 2}}}}
	rule := &collections.CheckError{Field: "salary", Reason: "11 above max 10", Err: collections.ErrFieldRule}

	got := p.RedactIn(staff, "people", p.View(staff, "people", doc), conflict)
	d, _ := json.Marshal(core.DetailsOf(got))
	if want := `{"base":1,"current":2,"theirs":{"name":"Ann"},"yours":[{"op":"set","path":"name","value":"A"}]}`; string(d) != want {
		t.Fatalf("staff sees %s, want %s", d, want)
	}
	got = p.RedactIn(staff, "people", p.View(staff, "people", doc), rule)
	if d, _ := json.Marshal(core.DetailsOf(got)); string(d) != `{"field":"salary"}` || strings.Contains(core.PublicMessage(got), "11") {
		t.Fatalf("staff sees %q %s", core.PublicMessage(got), d)
	}
	if got := p.RedactIn(ann, "people", p.View(ann, "people", doc), conflict); got != error(conflict) {
		t.Fatalf("the owner's refusal changed: %v", got)
	}
	got = p.RedactIn(bob, "people", p.View(bob, "people", doc), conflict)
	if d, _ := json.Marshal(core.DetailsOf(got)); string(d) != `{"base":1,"current":2}` {
		t.Fatalf("a caller the row rules shut out sees %s", d)
	}
}
