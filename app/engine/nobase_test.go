package engine_test

import (
	"testing"

	"github.com/open-autoglm/autoglm/app/collections/schemafile/schemafiletest"
	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/engine"
	"github.com/open-autoglm/autoglm/app/merge"
)

// What a write without a base means under each policy (docs/conflicts.md,
// "Writes without a base"): it is based on the document as it is, except
// that strict and a manual resolve need a base.
func TestWritesWithoutBase(t *testing.T) {
	cfg := schemafiletest.MustParse(t, `
collections:
  l: {policy: lww}
  c: {policy: crdt}
  s: {policy: strict}
  m: {policy: manual}
`)
	f := newFixture(t, func(o *engine.Options) { o.Collections = cfg })
	do := func(coll string, op core.Op) engine.Result {
		t.Helper()
		r, _ := f.eng.Do(t.Context(), core.Key{Collection: coll, ID: "d"}, op)
		return r
	}
	data := func(coll string) map[string]any {
		t.Helper()
		s, err := f.store.Load(t.Context(), core.Key{Collection: coll, ID: "d"})
		if err != nil || s.Doc == nil {
			t.Fatalf("load %s: %v", coll, err)
		}
		return s.Doc.Data()
	}
	for _, coll := range []string{"l", "c", "s", "m"} {
		if r := do(coll, core.Op{ClientID: "bob", OpID: 1, NoBase: true, Ops: []merge.FieldOp{set("title", "Plan"), set("n", 1)}}); r.Err != nil || r.Version != 1 {
			t.Fatalf("%s: create without a base: %+v", coll, r)
		}
	}

	t.Run("manual", func(t *testing.T) {
		// Nobody else writes: no conflict, whatever the write.
		for i, op := range []core.Op{
			{ClientID: "alice", OpID: 1, NoBase: true, Ops: []merge.FieldOp{set("title", "Plan B")}},                    // PATCH without base
			{ClientID: "alice", OpID: 2, NoBase: true, Replace: true, Ops: []merge.FieldOp{set("title", "Plan C")}},     // PUT
			{ClientID: "alice", OpID: 3, Base: 3, IfVersion: 3, Replace: true, Ops: []merge.FieldOp{set("title", "D")}}, // PUT with If-Match
		} {
			if r := do("m", op); r.Err != nil || r.Version != int64(i+2) {
				t.Fatalf("write %d: %+v", i+1, r)
			}
			if _, ok := data("m")[merge.ConflictsKey]; ok {
				t.Fatalf("write %d recorded a conflict with nobody else writing: %v", i+1, data("m"))
			}
		}
		// A write based on an older version than another client's write of
		// the field is a conflict.
		if r := do("m", core.Op{ClientID: "carol", OpID: 1, Base: 3, Ops: []merge.FieldOp{set("title", "E")}}); r.Err != nil {
			t.Fatal(r.Err)
		}
		conf, _ := data("m")[merge.ConflictsKey].(map[string]any)
		if len(conf) != 1 {
			t.Fatalf("concurrent write: %v", data("m"))
		}
		// A resolve without a base has not seen carol's value: refused.
		r := do("m", core.Op{ClientID: "alice", OpID: 4, NoBase: true, Ops: []merge.FieldOp{{Op: merge.KindResolve, Path: "title", Value: []byte(`"F"`)}}})
		if core.CodeOf(r.Err) != core.CodeConflict {
			t.Fatalf("resolve without a base: %+v", r)
		}
	})

	t.Run("crdt", func(t *testing.T) {
		// An increment without a base counts on the counter as it is.
		if r := do("c", core.Op{ClientID: "alice", OpID: 1, NoBase: true, Ops: []merge.FieldOp{inc("n", 2)}}); r.Err != nil {
			t.Fatal(r.Err)
		}
		if got := data("c")["n"]; got != 3.0 {
			t.Fatalf("n = %v, want 3", got)
		}
	})

	t.Run("strict", func(t *testing.T) {
		r := do("s", core.Op{ClientID: "alice", OpID: 1, NoBase: true, Ops: []merge.FieldOp{set("title", "X")}})
		if core.CodeOf(r.Err) != core.CodeConflict {
			t.Fatalf("strict write without a base: %+v", r)
		}
		// If-Match is the base.
		if r := do("s", core.Op{ClientID: "alice", OpID: 2, Base: 1, IfVersion: 1, Replace: true, Ops: []merge.FieldOp{set("title", "X")}}); r.Err != nil || r.Version != 2 {
			t.Fatalf("strict PUT with If-Match: %+v", r)
		}
	})

	t.Run("lww", func(t *testing.T) {
		if r := do("l", core.Op{ClientID: "alice", OpID: 1, NoBase: true, Ops: []merge.FieldOp{set("title", "X")}}); r.Err != nil || data("l")["title"] != "X" {
			t.Fatalf("lww write without a base: %+v %v", r, data("l"))
		}
	})
}
