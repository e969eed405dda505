package engine_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"

	"github.com/open-autoglm/autoglm/app/collections"
	"github.com/open-autoglm/autoglm/app/collections/schemafile/schemafiletest"
	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/engine"
	"github.com/open-autoglm/autoglm/app/merge"
)

func textOp(kind merge.Kind, v string) merge.FieldOp {
	return merge.FieldOp{Op: kind, Path: "notes", Value: json.RawMessage(v)}
}

// TestTextField: a field declared text merges two clients' concurrent
// typing, keeps its rules (max_length counts visible characters), and the
// size limit counts the stored metadata.
func TestTextField(t *testing.T) {
	conf := schemafiletest.MustParse(t, `
collections:
  forms:
    policy: lww
    limits: {max_doc_bytes: 400}
    fields:
      notes: {type: text, max_length: 30}
`)
	f := newFixture(t, func(o *engine.Options) { o.Collections = conf })
	if r := f.do(t, core.Op{ClientID: "a", OpID: 1, Ops: []merge.FieldOp{set("notes", "ab")}}); r.Err != nil {
		t.Fatal(r.Err)
	}
	_, data := f.data(t)
	if !merge.IsText(data, "notes") {
		t.Fatalf("a set of a text field stored no text metadata: %v", data)
	}
	// Both saw "ab" (version 1) and type between a and b at once.
	for _, op := range []core.Op{
		{ClientID: "b", OpID: 1, Base: 1, Ops: []merge.FieldOp{textOp(merge.KindIns, `["b",3,"a@1","bob"]`)}},
		{ClientID: "c", OpID: 1, Base: 1, Ops: []merge.FieldOp{textOp(merge.KindIns, `["c",3,"a@1","cy"]`)}},
	} {
		if r := f.do(t, op); r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	v, data := f.data(t)
	if data["notes"] != "acybobb" || v != 3 {
		t.Fatalf("v%d notes %q, want acybobb: both words, whole", v, data["notes"])
	}
	// max_length counts what the reader sees.
	r := f.do(t, core.Op{ClientID: "b", OpID: 2, Base: 3, Ops: []merge.FieldOp{textOp(merge.KindIns, `[0,"0123456789012345678901234567890"]`)}})
	if !errors.Is(r.Err, collections.ErrFieldRule) {
		t.Fatalf("over max_length: %v", r.Err)
	}
	// Many small edits by alternating authors grow the metadata until the
	// stored size reaches the limit: the refused edit changes nothing.
	var refused error
	var before map[string]any
	for i := 0; i < 30 && refused == nil; i++ {
		c := []string{"b", "c"}[i%2]
		v, before = f.data(t)
		r := f.do(t, core.Op{ClientID: c, OpID: uint64(10 + i), Base: v, Ops: []merge.FieldOp{textOp(merge.KindIns, `[1,"x"]`), textOp(merge.KindDel, `[3,1]`)}})
		refused = r.Err
	}
	if core.CodeOf(refused) != core.CodeTooLarge {
		t.Fatalf("metadata never reached the size limit: %v", refused)
	}
	if v2, after := f.data(t); v2 != v || !reflect.DeepEqual(after, before) {
		t.Fatalf("refused edit changed the document: v%d -> v%d", v, v2)
	}
	if n := len([]rune(before["notes"].(string))); n > 30 {
		t.Fatalf("visible text %d characters", n)
	}
}
