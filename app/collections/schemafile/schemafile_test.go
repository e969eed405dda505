package schemafile_test

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/open-autoglm/autoglm/app/collections"
	"github.com/open-autoglm/autoglm/app/collections/schemafile"
	"github.com/open-autoglm/autoglm/app/collections/schemafile/schemafiletest"
	"github.com/open-autoglm/autoglm/app/merge"
)

const shipped = "../../../config/collections.yaml"

func TestLoadShipped(t *testing.T) {
	c := schemafiletest.MustLoad(t, shipped)
	if diff := cmp.Diff([]string{"approvals", "forms", "notes", "orders", "profiles", "projects"}, c.Names()); diff != "" {
		t.Fatalf("collections (-want +got):\n%s", diff)
	}
	for name, want := range map[string]merge.Policy{"profiles": merge.LWW, "forms": merge.CRDT, "orders": merge.Strict, "notes": merge.Manual, "approvals": merge.LWW, "projects": merge.LWW} {
		col, ok := c.Collection(name)
		if !ok || col.Policy != want || c.Policy(name) != want {
			t.Errorf("%s: policy %q (declared %v), want %q", name, col.Policy, ok, want)
		}
		if col.Limits.MaxDocBytes <= 0 || col.Limits.MaxOps <= 0 {
			t.Errorf("%s: limits %+v", name, col.Limits)
		}
	}
	if !c.AllowUnknown {
		t.Error("the shipped file refuses unknown collections")
	}
	p, _ := c.Collection("profiles")
	if p.OwnerField != "user_id" || !p.CanWrite([]string{"user"}) || p.CanWrite([]string{"guest"}) {
		t.Errorf("profiles: owner %q, roles %v/%v", p.OwnerField, p.ReadRoles, p.WriteRoles)
	}
	a, _ := c.Collection("approvals")
	want := &collections.StateMachine{
		Field: "status", Initial: "draft",
		States: []string{"draft", "submitted", "approved", "rejected"},
		Transitions: []collections.Transition{
			{From: "draft", To: "submitted", Roles: []string{"editor"}},
			{From: "submitted", To: "draft", Roles: []string{"editor"}},
			{From: "submitted", To: "approved", Roles: []string{"approver"}},
			{From: "submitted", To: "rejected", Roles: []string{"approver"}},
		},
	}
	if diff := cmp.Diff(want, a.StateMachines["status"]); diff != "" {
		t.Fatalf("approvals status machine (-want +got):\n%s", diff)
	}
}

func TestUnknownCollection(t *testing.T) {
	c := schemafiletest.MustParse(t, `
defaults:
  policy: crdt
  limits: {max_ops: 10}
collections:
  a: {limits: {max_doc_bytes: 100}}
  b: {policy: strict}
`)
	u, ok := c.Collection("other")
	if ok || u.Declared || u.Name != "other" || u.Policy != merge.CRDT || u.Limits != (collections.Limits{MaxDocBytes: collections.DefaultMaxDocBytes, MaxOps: 10}) {
		t.Fatalf("unknown collection: %+v, declared %v", u, ok)
	}
	if !c.AllowUnknown {
		t.Fatal("unknown collections refused by default")
	}
	if a, _ := c.Collection("a"); a.Policy != merge.CRDT || a.Limits != (collections.Limits{MaxDocBytes: 100, MaxOps: 10}) {
		t.Fatalf("a inherits the defaults: %+v", a)
	}
	if c.Policy("b") != merge.Strict {
		t.Fatal("b is not strict")
	}
	if !u.CanRead(nil) || !u.CanWrite([]string{"x"}) {
		t.Fatal("an undeclared collection restricts roles")
	}
	if d := collections.Default(); !d.AllowUnknown || d.Policy("x") != merge.LWW {
		t.Fatalf("collections.Default = %+v", d)
	}
	empty := schemafiletest.MustParse(t, "# nothing\n")
	if !empty.AllowUnknown || len(empty.Names()) != 0 {
		t.Fatalf("empty file = %+v", empty)
	}
	closed := schemafiletest.MustParse(t, "allow_unknown: false\n")
	if closed.AllowUnknown {
		t.Fatal("allow_unknown: false ignored")
	}
}

func TestBadConfigs(t *testing.T) {
	tests := []struct {
		name string
		text string
		line int
		msg  string
	}{
		{"Syntax", "collections:\n  a: [\n", 2, "did not find expected"},
		{"TopUnknownKey", "colections:\n  a: {}\n", 1, `unknown key "colections"`},
		{"TopNotMapping", "- a\n", 1, "the file must be a mapping"},
		{"AllowUnknownNotBool", "allow_unknown: yes please\n", 1, "allow_unknown must be true or false"},
		{"CollectionUnknownKey", "collections:\n  a:\n    policy: lww\n    polcy: crdt\n", 4, `unknown key "polcy"`},
		{"UnknownPolicy", "collections:\n  a:\n    policy: fww\n", 3, `unknown policy "fww"`},
		{"DefaultsUnknownPolicy", "defaults:\n  policy: last\n", 2, `unknown policy "last"`},
		{"BadCollectionName", "collections:\n  Orders: {}\n", 2, `collection name "Orders"`},
		{"DuplicateCollection", "collections:\n  a: {}\n  a: {}\n", 3, `duplicate key "a"`},
		{"NegativeLimit", "collections:\n  a:\n    limits:\n      max_ops: -1\n", 4, "max_ops must be at least 1"},
		{"LimitNotInt", "collections:\n  a:\n    limits:\n      max_doc_bytes: 1.5\n", 4, "max_doc_bytes must be an integer"},
		{"LimitUnknownKey", "collections:\n  a:\n    limits:\n      max_bytes: 10\n", 4, `unknown key "max_bytes"`},
		{"FieldUnknownType", "collections:\n  a:\n    fields:\n      x: {type: txt}\n", 4, `unknown type "txt"`},
		{"TextEnum", "collections:\n  a:\n    fields:\n      x:\n        type: text\n        enum: [a]\n", 6, "a text field takes no enum"},
		{"TextStateMachine", "collections:\n  a:\n    fields:\n      s: {type: text}\n    state_machines:\n      s: {states: [a], initial: a}\n", 6, "states are strings"},
		{"FieldUnknownRule", "collections:\n  a:\n    fields:\n      x:\n        type: string\n        maxlength: 3\n", 6, `unknown key "maxlength"`},
		{"FieldReservedPath", "collections:\n  a:\n    fields:\n      _x: {type: string}\n", 4, `field "_x"`},
		{"MaxLengthOnNumber", "collections:\n  a:\n    fields:\n      n:\n        type: number\n        max_length: 3\n", 6, "max_length needs type string"},
		{"MinAboveMax", "collections:\n  a:\n    fields:\n      n: {type: number, min: 5,\n          max: 1}\n", 5, "max 1 is below min 5"},
		{"EnumWrongType", "collections:\n  a:\n    fields:\n      n:\n        type: number\n        enum:\n          - 1\n          - two\n", 8, `enum value "two" is not of type number`},
		{"RolesNotList", "collections:\n  a:\n    write_roles: editor\n", 3, "write_roles must be a list of strings"},
		{"OwnerFieldBad", "collections:\n  a:\n    owner_field: a..b\n", 3, "owner_field"},
		{"EventsNotBool", "collections:\n  a:\n    events: sometimes\n", 3, "events must be true or false"},
		{"WebhooksNotList", "collections:\n  a:\n    webhooks: {id: x}\n", 3, "webhooks: want a list"},
		{"WebhookBadURL", "collections:\n  a:\n    webhooks:\n      - {id: x, url: 'ftp://h/p', secret_env: S}\n", 4, `url "ftp://h/p" is not an http(s) URL`},
		{"WebhookNoSecret", "collections:\n  a:\n    webhooks:\n      - {id: x, url: 'http://h/p'}\n", 4, "secret_env"},
		{"WebhookBadID", "collections:\n  a:\n    webhooks:\n      - {id: X!, url: 'http://h/p', secret_env: S}\n", 4, `webhook id "X!"`},
		{"WebhookUnknownKey", "collections:\n  a:\n    webhooks:\n      - {id: x, url: 'http://h/p', secret: s}\n", 4, `unknown key "secret"`},
		{"WebhookTwice", "collections:\n  a:\n    webhooks:\n      - {id: x, url: 'http://h/p', secret_env: S}\n      - {id: x, url: 'http://h/q', secret_env: S}\n", 5, `used twice`},
		{"NoStates", "collections:\n  a:\n    state_machines:\n      s:\n        initial: x\n", 5, "needs a non-empty list of states"},
		{"InitialUndeclared", "collections:\n  a:\n    state_machines:\n      s:\n        states: [a, b]\n        initial: c\n", 6, `initial state "c" is not declared`},
		{"TransitionToUndeclared", "collections:\n  a:\n    state_machines:\n      s:\n        states: [a, b]\n        initial: a\n        transitions:\n          - {from: a, to: b}\n          - from: b\n            to: c\n", 10, `transition to undeclared state "c"`},
		{"TransitionFromUndeclared", "collections:\n  a:\n    state_machines:\n      s:\n        states: [a, b]\n        initial: a\n        transitions:\n          - {from: [a, z], to: b}\n", 8, `transition from undeclared state "z"`},
		{"TransitionTwice", "collections:\n  a:\n    state_machines:\n      s:\n        states: [a, b]\n        initial: a\n        transitions:\n          - {from: a, to: b}\n          - {from: a, to: b, roles: [x]}\n", 9, "declared twice"},
		{"TransitionUnknownKey", "collections:\n  a:\n    state_machines:\n      s:\n        states: [a, b]\n        initial: a\n        transitions:\n          - {from: a, to: b, role: [x]}\n", 8, `unknown key "role"`},
		{"StateFieldNotString", "collections:\n  a:\n    fields:\n      s: {type: number}\n    state_machines:\n      s:\n        states: [a]\n        initial: a\n", 6, "states are strings"},
		{"DuplicateState", "collections:\n  a:\n    state_machines:\n      s:\n        states: [a, b, a]\n        initial: a\n", 5, `"a" listed twice`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := schemafile.Parse("bad.yaml", []byte(tt.text))
			if err == nil {
				t.Fatal("accepted")
			}
			var le *schemafile.LoadError
			if !errors.As(err, &le) || !errors.Is(err, collections.ErrInvalidConfig) {
				t.Fatalf("error %T %v is not a *schemafile.LoadError", err, err)
			}
			if le.File != "bad.yaml" || le.Line != tt.line || !strings.Contains(le.Msg, tt.msg) {
				t.Fatalf("error %q (line %d), want line %d with %q", err, le.Line, tt.line, tt.msg)
			}
			if !strings.HasPrefix(err.Error(), "bad.yaml:"+strconv.Itoa(tt.line)+":") {
				t.Fatalf("error %q does not start with file:line", err)
			}
		})
	}
}

func TestLoadErrors(t *testing.T) {
	if _, err := schemafile.Load(filepath.Join(t.TempDir(), "missing.yaml")); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Load of a missing file: %v", err)
	}
	path := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(path, []byte("collections:\n  a:\n    policy: nope\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := schemafile.Load(path)
	if err == nil || !strings.HasPrefix(err.Error(), path+":3:") {
		t.Fatalf("Load = %v, want an error at %s:3", err, path)
	}
}

func TestAliases(t *testing.T) {
	c := schemafiletest.MustParse(t, `
collections:
  a:
    write_roles: &editors [editor, admin]
  b:
    write_roles: *editors
`)
	b, _ := c.Collection("b")
	if diff := cmp.Diff([]string{"editor", "admin"}, b.WriteRoles); diff != "" {
		t.Fatalf("aliased roles (-want +got):\n%s", diff)
	}
}

func TestEventsAndWebhooks(t *testing.T) {
	c := schemafiletest.MustParse(t, "collections:\n  a:\n    events: true\n    webhooks:\n      - {id: audit, url: 'https://example.test/hook', secret_env: AUDIT_SECRET}\n  b: {}\n")
	a := c.Integrations["a"]
	if !a.Events || !c.Integrations.Events("a") || len(a.Webhooks) != 1 || a.Webhooks[0] != (collections.Webhook{ID: "audit", URL: "https://example.test/hook", SecretEnv: "AUDIT_SECRET"}) {
		t.Fatalf("a: events %v webhooks %+v", a.Events, a.Webhooks)
	}
	if b, ok := c.Integrations["b"]; ok || c.Integrations.Events("b") || len(b.Webhooks) != 0 {
		t.Fatalf("b: %+v", b)
	}
}

func TestReadRulesLoadErrors(t *testing.T) {
	for _, tc := range []struct{ name, yaml, want string }{
		{"EmptyRules", "collections:\n  c:\n    read_rules: {}\n", "declare at least one of owner, claims, roles"},
		{"OwnerWithoutOwnerField", "collections:\n  c:\n    read_rules: {owner: true}\n", "no owner_field"},
		{"OwnerFieldRuleWithoutOwnerField", "collections:\n  c:\n    fields:\n      e: {readable_by: [owner]}\n", "no owner_field"},
		{"UnknownRuleKey", "collections:\n  c:\n    read_rules: {team: x}\n", `unknown key "team"`},
		{"EmptyClaim", "collections:\n  c:\n    read_rules: {claims: {team: \"\"}}\n", "claim name is empty"},
		{"BadClaimField", "collections:\n  c:\n    read_rules: {claims: {_t: team}}\n", "want a dot path"},
		{"EmptyReadableBy", "collections:\n  c:\n    fields:\n      e: {readable_by: []}\n", "at least one role"},
		{"NestedReadableBy", "collections:\n  c:\n    fields:\n      a.b: {readable_by: [x]}\n", "top-level fields only"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := schemafile.Parse("bad.yaml", []byte(tc.yaml))
			if !errors.Is(err, collections.ErrInvalidConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one containing %q", err, tc.want)
			}
		})
	}
}
