package merge

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/open-autoglm/autoglm/app/clock"
)

// MustOps parses a JSON array of field ops.
func MustOps(tb testing.TB, s string) []FieldOp {
	tb.Helper()
	var ops []FieldOp
	if err := json.Unmarshal([]byte(s), &ops); err != nil {
		tb.Fatalf("ops %s: %v", s, err)
	}
	return ops
}

// MustData parses a JSON object.
func MustData(tb testing.TB, s string) map[string]any {
	tb.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		tb.Fatalf("data %s: %v", s, err)
	}
	return m
}

// ts builds an HLC for client at wall ms.
func ts(wall int64, client string) clock.Timestamp {
	return clock.Timestamp{Wall: wall, Node: client}
}

// docState is a test document: the merge state plus its version, the way
// the service holds it.
type docState struct {
	doc     *Doc
	version int64
	plain   map[string]any // a client's copy, kept up to date with ApplyPlain
}

func newState() *docState { return &docState{doc: NewDoc(), plain: map[string]any{}} }

// apply merges one op into s like the service does: Current is the
// document's version, and an accepted op advances it by one. It checks that
// the effective ops reproduce the data on a plain copy.
func (s *docState) apply(tb testing.TB, p Policy, in Input) ([]FieldOp, error) {
	tb.Helper()
	in.Current = s.version
	eff, err := Apply(p, s.doc, in)
	if err != nil {
		return nil, err
	}
	s.version++
	checkEffective(tb, eff)
	if err := ApplyPlain(s.plain, eff); err != nil {
		tb.Fatalf("ApplyPlain(%s): %v", jsonString(eff), err)
	}
	if !reflect.DeepEqual(s.plain, s.doc.Data) {
		tb.Fatalf("plain copy diverged after %s\n plain %s\n  doc  %s", jsonString(eff), canonical(s.plain), canonical(s.doc.Data))
	}
	return eff, nil
}

func (s *docState) mustApply(tb testing.TB, p Policy, in Input) []FieldOp {
	tb.Helper()
	eff, err := s.apply(tb, p, in)
	if err != nil {
		tb.Fatalf("Apply: %v", err)
	}
	return eff
}

func jsonString(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return err.Error()
	}
	return string(b)
}

// wantData compares data with a JSON object, ignoring key order.
func wantData(tb testing.TB, got map[string]any, want string) {
	tb.Helper()
	if g, w := canonical(got), canonical(MustData(tb, want)); g != w {
		tb.Fatalf("data = %s\n want %s", g, w)
	}
}

// checkEffective checks that effective ops use only the kinds every client
// applies the same way: set, unset, inc and the text edits by id.
func checkEffective(tb testing.TB, eff []FieldOp) {
	tb.Helper()
	for _, op := range eff {
		if op.Op != KindSet && op.Op != KindUnset && op.Op != KindInc && op.Op != KindIns && op.Op != KindDel {
			tb.Fatalf("effective op of kind %s: %s", op.Op, jsonString(eff))
		}
		if err := op.ValidateEffective(); err != nil {
			tb.Fatalf("invalid effective op: %v", err)
		}
		// Text edits travel by id, never by position.
		if op.Op == KindIns {
			if v, _ := parseIns(op.Value); v.pos >= 0 {
				tb.Fatalf("positional effective ins: %s", jsonString(op))
			}
		}
		if op.Op == KindDel {
			if v, _ := parseDel(op.Value); v.pos >= 0 {
				tb.Fatalf("positional effective del: %s", jsonString(op))
			}
		}
	}
}
