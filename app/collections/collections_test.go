package collections_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/open-autoglm/autoglm/app/collections"
	"github.com/open-autoglm/autoglm/app/collections/schemafile/schemafiletest"
)

const shipped = "../../config/collections.yaml"

func data(kv ...any) map[string]any {
	m := map[string]any{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i].(string)] = kv[i+1]
	}
	return m
}

func TestApprovalsWorkflow(t *testing.T) {
	a, _ := schemafiletest.MustLoad(t, shipped).Collection("approvals")
	doc := func(status string) map[string]any { return data("title", "Laptop", "status", status) }
	editor, approver := []string{"editor"}, []string{"approver"}
	tests := []struct {
		name   string
		before map[string]any
		after  map[string]any
		roles  []string
		want   error
	}{
		{"CreateAsDraft", nil, doc("draft"), editor, nil},
		{"CreateSubmitted", nil, doc("submitted"), editor, collections.ErrInvalidTransition},
		{"Submit", doc("draft"), doc("submitted"), editor, nil},
		{"WithdrawByAuthor", doc("submitted"), doc("draft"), editor, nil},
		{"WithdrawByApprover", doc("submitted"), doc("draft"), approver, collections.ErrForbiddenTransition},
		{"Approve", doc("submitted"), doc("approved"), approver, nil},
		{"Reject", doc("submitted"), doc("rejected"), approver, nil},
		{"EditorApproves", doc("submitted"), doc("approved"), editor, collections.ErrForbiddenTransition},
		{"ApproveDraft", doc("draft"), doc("approved"), approver, collections.ErrInvalidTransition},
		{"ReopenApproved", doc("approved"), doc("draft"), editor, collections.ErrInvalidTransition},
		{"UnknownState", doc("draft"), doc("archived"), editor, collections.ErrInvalidTransition},
		{"NotAString", doc("draft"), data("title", "Laptop", "status", 3.0), editor, collections.ErrInvalidTransition},
		{"RemoveStatus", doc("draft"), data("title", "Laptop"), editor, collections.ErrInvalidTransition},
		{"Unchanged", doc("submitted"), doc("submitted"), []string{"viewer"}, nil},
		{"NoteByApprover", doc("submitted"), data("title", "Laptop", "status", "submitted", "decision_note", "ok"), approver, nil},
		{"NoteByEditor", doc("submitted"), data("title", "Laptop", "status", "submitted", "decision_note", "ok"), editor, collections.ErrForbiddenField},
		{"MissingTitle", doc("draft"), data("status", "draft"), editor, collections.ErrFieldRule},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := a.Check(tt.before, tt.after, tt.roles)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Check = %v", err)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("Check = %v, want %v", err, tt.want)
			}
			var ce *collections.CheckError
			if !errors.As(err, &ce) || ce.Field == "" {
				t.Fatalf("Check error %T %+v is not a *collections.CheckError naming the field", err, err)
			}
		})
	}
	t.Run("ForbiddenIsForbidden", func(t *testing.T) {
		err := a.Check(doc("submitted"), doc("approved"), editor)
		var ce *collections.CheckError
		if !errors.Is(err, collections.ErrForbidden) || !errors.As(err, &ce) || ce.From != "submitted" || ce.To != "approved" {
			t.Fatalf("Check = %#v", err)
		}
	})
}

func TestFieldRules(t *testing.T) {
	c := schemafiletest.MustParse(t, `
collections:
  things:
    fields:
      name: {type: string, required: true, max_length: 3}
      n: {type: number, min: 1, max: 10}
      i: {type: integer}
      b: {type: bool}
      o: {type: object}
      o.deep: {type: string, enum: [x, y]}
      arr: {type: array, max_length: 2}
      tags: {type: set}
      color: {enum: [red, 1, true, null]}
      notes: {type: text, max_length: 4}
`)
	col, ok := c.Collection("things")
	if !ok {
		t.Fatal("things not declared")
	}
	if tf := col.TextFields(); len(tf) != 1 || !tf["notes"] {
		t.Fatalf("TextFields = %v", tf)
	}
	base := func(kv ...any) map[string]any { return data(append([]any{"name", "abc"}, kv...)...) }
	tests := []struct {
		name string
		doc  map[string]any
		ok   bool
	}{
		{"Minimal", base(), true},
		{"Required", data("n", 2.0), false},
		{"MaxLengthRunes", data("name", "日本語"), true},
		{"MaxLength", data("name", "abcd"), false},
		{"WrongType", data("name", 1.0), false},
		{"Null", data("name", nil), false},
		{"Min", base("n", 0.5), false},
		{"Max", base("n", 10.5), false},
		{"InRange", base("n", 10.0), true},
		{"Integer", base("i", 3.0), true},
		{"NotInteger", base("i", 3.5), false},
		{"Bool", base("b", "true"), false},
		{"Text", base("notes", "日本語!"), true},
		{"TextMaxLength", base("notes", "hello"), false},
		{"TextNotString", base("notes", 1.0), false},
		{"Object", base("o", []any{}), false},
		{"NestedEnum", base("o", data("deep", "x")), true},
		{"NestedEnumBad", base("o", data("deep", "z")), false},
		{"Array", base("arr", []any{1.0, 2.0}), true},
		{"ArrayTooLong", base("arr", []any{1.0, 2.0, 3.0}), false},
		{"Set", base("tags", []any{"a", "b"}), true},
		{"SetDuplicate", base("tags", []any{"a", "a"}), false},
		{"AnyTypeEnum", base("color", 1.0), true},
		{"AnyTypeEnumNull", base("color", nil), true},
		{"AnyTypeEnumBad", base("color", "blue"), false},
		{"ReservedKeysIgnored", base("_conflicts", data("name", []any{})), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := col.Check(nil, tt.doc, nil)
			if tt.ok != (err == nil) {
				t.Fatalf("Check = %v, want ok=%v", err, tt.ok)
			}
			if err != nil && !errors.Is(err, collections.ErrFieldRule) {
				t.Fatalf("Check error %v does not wrap collections.ErrFieldRule", err)
			}
		})
	}
}

// Collection names follow the service's syntax for collection names
// ([a-z][a-z0-9_-]{0,63}), so every declared collection is addressable.
func TestCollectionNameSyntax(t *testing.T) {
	for name, want := range map[string]bool{
		"a": true, "orders": true, "my-coll_2": true, strings.Repeat("a", 64): true,
		"A": false, "1a": false, "a/b": false, "a:b": false, "": false, strings.Repeat("a", 65): false,
	} {
		if got := collections.ValidName(name); got != want {
			t.Errorf("%q: valid = %v, want %v", name, got, want)
		}
	}
}

func TestSnapshot(t *testing.T) {
	c := schemafiletest.MustParse(t, `
collections:
  a:
    fields:
      meta.owner: {type: string, writable_by: [admin]}
      title: {type: string}
    state_machines:
      status: {states: [draft, done], initial: draft, transitions: [{from: draft, to: done, roles: [boss]}]}
`)
	col, _ := c.Collection("a")
	doc := map[string]any{"title": "t", "status": "draft", "meta": map[string]any{"owner": "ann", "x": 1.0}}
	before := col.Snapshot(doc)
	if diff := cmp.Diff(map[string]any{"status": "draft", "meta": map[string]any{"owner": "ann"}}, before); diff != "" {
		t.Fatalf("Snapshot (-want +got):\n%s", diff)
	}
	// The document changes in place; the snapshot still holds the old state.
	doc["status"] = "done"
	doc["meta"].(map[string]any)["owner"] = "bob"
	if err := col.Check(before, doc, []string{"boss"}); !errors.Is(err, collections.ErrForbiddenField) {
		t.Fatalf("Check = %v, want collections.ErrForbiddenField for meta.owner", err)
	}
	if err := col.Check(before, doc, []string{"admin"}); !errors.Is(err, collections.ErrForbiddenTransition) {
		t.Fatalf("Check = %v, want collections.ErrForbiddenTransition", err)
	}
	if err := col.Check(before, doc, []string{"admin", "boss"}); err != nil {
		t.Fatalf("Check = %v", err)
	}
	if col.Snapshot(nil) != nil {
		t.Fatal("Snapshot(nil) is not nil")
	}
}
