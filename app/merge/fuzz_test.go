package merge

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// fuzzDoc is a document with nested objects, a counter, a set, tombstones,
// a text with deleted characters and (under manual) an open conflict, for
// FuzzApply to work on.
func fuzzDoc(tb testing.TB, p Policy) *docState {
	s := newState()
	s.mustApply(tb, p, Input{Client: "a", HLC: ts(10, "a"), Ops: MustOps(tb, `[
		{"op":"set","path":"name","value":"Ann"},
		{"op":"set","path":"addr","value":{"city":"Oslo","geo":{"lat":59.9}}},
		{"op":"inc","path":"n","value":2},
		{"op":"add","path":"tags","value":"x"},
		{"op":"unset","path":"gone"},
		{"op":"ins","path":"notes","value":[0,"hello"]}]`)})
	s.mustApply(tb, p, Input{Client: "b", HLC: ts(12, "b"), Base: 1, Ops: MustOps(tb, `[{"op":"set","path":"addr.zip","value":"0150"},
		{"op":"ins","path":"notes","value":["b",6,"a@5","!"]},{"op":"del","path":"notes","value":["a",2,2]}]`)})
	if p == Manual {
		s.mustApply(tb, p, Input{Client: "c", HLC: ts(11, "c"), Base: 1, Ops: MustOps(tb, `[{"op":"set","path":"addr.zip","value":"9999"}]`)})
	}
	return s
}

// FuzzApply feeds arbitrary ops to every policy. Whatever happens, Apply
// must not panic, a refused op must leave the document as it was, and an
// accepted op's effective ops must reproduce the data on a client's copy.
func FuzzApply(f *testing.F) {
	f.Add(uint8(0), int8(2), `[{"op":"set","path":"addr","value":{"x":1}}]`)
	f.Add(uint8(1), int8(0), `[{"op":"inc","path":"n","value":1e308},{"op":"inc","path":"n","value":1e308}]`)
	f.Add(uint8(2), int8(1), `[{"op":"set","path":"a.b.c","value":[1,{"z":null}]}]`)
	f.Add(uint8(3), int8(3), `[{"op":"resolve","path":"addr"}]`)
	f.Add(uint8(3), int8(0), `[{"op":"set","path":"addr.zip","value":"1"},{"op":"remove","path":"tags","value":"x"}]`)
	f.Add(uint8(1), int8(1), `[{"op":"ins","path":"notes","value":["f",9,"a@1","xy"]},{"op":"del","path":"notes","value":["f",9,1,"b",6,1]}]`)
	f.Add(uint8(0), int8(1), `[{"op":"ins","path":"notes","value":["f",2,"",""]}]`)
	f.Add(uint8(2), int8(1), `[{"op":"set","path":"notes","value":"new"},{"op":"del","path":"notes","value":[1,5]}]`)
	f.Add(uint8(1), int8(1), `[{"op":"inc","path":"notes","value":1}]`)
	f.Add(uint8(0), int8(1), `[{"op":"set","path":"notes","value":{"k":1}},{"op":"ins","path":"notes","value":[0,"x"]}]`)
	f.Fuzz(func(t *testing.T, pol uint8, base int8, ops string) {
		var in []FieldOp
		if json.Unmarshal([]byte(ops), &in) != nil {
			return
		}
		p := Policies()[int(pol)%len(Policies())]
		s := fuzzDoc(t, p)
		before := jsonString(s.doc)
		plain := cloneMap(s.doc.Data)
		eff, err := Apply(p, s.doc, Input{Client: "f", HLC: ts(11, "f"), Base: int64(base), Current: s.version, Ops: in})
		if err != nil {
			if !errors.Is(err, ErrInvalidOp) && !errors.Is(err, ErrConflict) {
				t.Fatalf("unexpected error %v", err)
			}
			if after := jsonString(s.doc); after != before {
				t.Fatalf("refused op changed the document\nbefore %s\n after %s", before, after)
			}
			return
		}
		b, err := json.Marshal(s.doc)
		if err != nil {
			t.Fatalf("document no longer encodes: %v", err)
		}
		var back Doc
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatalf("stored document does not decode: %v", err)
		}
		checkEffective(t, eff)
		// The client's copy comes off the wire: encode the effective ops.
		wire, _ := json.Marshal(eff)
		var got []FieldOp
		if err := json.Unmarshal(wire, &got); err != nil {
			t.Fatal(err)
		}
		if err := ApplyPlain(plain, got); err != nil {
			t.Fatalf("ApplyPlain(%s): %v", wire, err)
		}
		if a, b := canonical(plain), canonical(s.doc.Data); a != b {
			t.Fatalf("client copy diverged after %s\n plain %s\n   doc %s", wire, a, b)
		}
	})
}

// FuzzFieldOpValidate checks that validation never panics, that everything
// a client may send is also a valid effective op, that reserved keys are
// refused from clients, and that a valid op either applies or fails cleanly.
func FuzzFieldOpValidate(f *testing.F) {
	f.Add("set", "a.b", []byte(`{"k":[1,2]}`))
	f.Add("unset", "_conflicts", []byte(nil))
	f.Add("inc", "n", []byte(`"1"`))
	f.Add("resolve", "title", []byte(nil))
	f.Add("add", "a..b", []byte(`1`))
	f.Add("ins", "t", []byte(`["c",1,"","ab"]`))
	f.Add("ins", "t", []byte(`[3,"ab"]`))
	f.Add("del", "t", []byte(`["c",1,1,"d",4,2]`))
	f.Add("del", "t", []byte(`[0,1]`))
	f.Fuzz(func(t *testing.T, kind, path string, value []byte) {
		op := FieldOp{Op: Kind(kind), Path: path, Value: value}
		err := op.Validate()
		effErr := op.ValidateEffective()
		if err != nil && !errors.Is(err, ErrInvalidOp) {
			t.Fatalf("Validate error %v does not wrap ErrInvalidOp", err)
		}
		reserved := false
		for _, s := range strings.Split(path, ".") {
			if strings.HasPrefix(s, "_") {
				reserved = true
			}
		}
		if err == nil {
			if effErr != nil {
				t.Fatalf("Validate accepts %+v but ValidateEffective refuses it: %v", op, effErr)
			}
			if reserved {
				t.Fatalf("Validate accepts reserved path %q", path)
			}
			if ValidatePath(path) != nil {
				t.Fatalf("Validate accepts %+v but ValidatePath refuses %q", op, path)
			}
		}
		if effErr == nil && !reserved && err != nil {
			t.Fatalf("only the reserved-key rule may separate the two: %v", err)
		}
		for _, p := range Policies() {
			d := NewDoc()
			if _, err := Apply(p, d, Input{Client: "c", HLC: ts(1, "c"), Ops: []FieldOp{op}}); err != nil && !errors.Is(err, ErrInvalidOp) {
				t.Fatalf("%s: unexpected error %v", p, err)
			}
		}
	})
}

// FuzzMergeConverges generates a concurrent scenario from a seed and checks
// that two delivery orders converge under lww and crdt.
func FuzzMergeConverges(f *testing.F) {
	f.Add(uint64(1), uint8(3))
	f.Add(uint64(42), uint8(5))
	f.Fuzz(func(t *testing.T, seed uint64, clients uint8) {
		for _, p := range []Policy{LWW, CRDT} {
			g := newGen(seed)
			sc := g.scenario(p, 2+int(clients%4), 5)
			first, second := g.interleave(sc.clients...), g.interleave(sc.clients...)
			if a, b := canonical(run(t, p, sc, first).Data), canonical(run(t, p, sc, second).Data); a != b {
				t.Fatalf("%s: orders disagree\n  %s\n  %s\n%s", p, a, b, describe(sc, first, second))
			}
		}
	})
}
