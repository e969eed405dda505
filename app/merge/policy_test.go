package merge

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/open-autoglm/autoglm/app/clock"
)

func TestValidate(t *testing.T) {
	tests := []struct {
		name      string
		op        FieldOp
		client    bool // Validate accepts it
		effective bool // ValidateEffective accepts it
	}{
		{"Set", FieldOp{Op: KindSet, Path: "a.b", Value: json.RawMessage(`1`)}, true, true},
		{"SetNoValue", FieldOp{Op: KindSet, Path: "a"}, false, false},
		{"SetBadJSON", FieldOp{Op: KindSet, Path: "a", Value: json.RawMessage(`{`)}, false, false},
		{"Unset", FieldOp{Op: KindUnset, Path: "a"}, true, true},
		{"UnsetWithValue", FieldOp{Op: KindUnset, Path: "a", Value: json.RawMessage(`1`)}, false, false},
		{"Inc", FieldOp{Op: KindInc, Path: "n", Value: json.RawMessage(`-2.5`)}, true, true},
		{"IncString", FieldOp{Op: KindInc, Path: "n", Value: json.RawMessage(`"1"`)}, false, false},
		{"Add", FieldOp{Op: KindAdd, Path: "tags", Value: json.RawMessage(`"x"`)}, true, true},
		{"Remove", FieldOp{Op: KindRemove, Path: "tags", Value: json.RawMessage(`{"id":1}`)}, true, true},
		{"ResolveValue", FieldOp{Op: KindResolve, Path: "title", Value: json.RawMessage(`"x"`)}, true, true},
		{"ResolveDelete", FieldOp{Op: KindResolve, Path: "title"}, true, true},
		{"Unknown", FieldOp{Op: "move", Path: "a"}, false, false},
		{"EmptyPath", FieldOp{Op: KindUnset}, false, false},
		{"EmptyKey", FieldOp{Op: KindUnset, Path: "a..b"}, false, false},
		{"TrailingDot", FieldOp{Op: KindUnset, Path: "a."}, false, false},
		{"Reserved", FieldOp{Op: KindSet, Path: "_conflicts", Value: json.RawMessage(`{}`)}, false, true},
		{"ReservedInside", FieldOp{Op: KindUnset, Path: "a._x"}, false, true},
		{"MaxDepth", FieldOp{Op: KindUnset, Path: "a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p"}, true, true},
		{"TooDeep", FieldOp{Op: KindUnset, Path: "a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q"}, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.op.Validate(); (err == nil) != tt.client {
				t.Errorf("Validate = %v, want ok=%v", err, tt.client)
			} else if err != nil && !errors.Is(err, ErrInvalidOp) {
				t.Errorf("Validate error %v does not wrap ErrInvalidOp", err)
			}
			if err := tt.op.ValidateEffective(); (err == nil) != tt.effective {
				t.Errorf("ValidateEffective = %v, want ok=%v", err, tt.effective)
			}
		})
	}
}

func TestApplyRefusesReservedKeys(t *testing.T) {
	for _, p := range Policies() {
		s := newState()
		_, err := s.apply(t, p, Input{Client: "c", HLC: ts(1, "c"), Ops: MustOps(t, `[{"op":"set","path":"_conflicts","value":{}}]`)})
		if !errors.Is(err, ErrInvalidOp) {
			t.Errorf("%s: a client write of _conflicts: err = %v, want ErrInvalidOp", p, err)
		}
	}
}

func TestParsePolicy(t *testing.T) {
	for _, p := range Policies() {
		if got, err := ParsePolicy(string(p)); err != nil || got != p {
			t.Errorf("ParsePolicy(%q) = %q, %v", p, got, err)
		}
	}
	if got, err := ParsePolicy(""); err != nil || got != LWW {
		t.Errorf("ParsePolicy(\"\") = %q, %v; want lww", got, err)
	}
	if _, err := ParsePolicy("fww"); err == nil {
		t.Error("ParsePolicy(fww) accepted")
	}
	if _, err := Apply("fww", NewDoc(), Input{}); !errors.Is(err, ErrInvalidOp) {
		t.Errorf("Apply with an unknown policy: %v", err)
	}
}

// wantEitherOrder applies a and b under LWW in both orders; each leaves
// want.
func wantEitherOrder(t *testing.T, a, b Input, want string) {
	t.Helper()
	for _, order := range [][]Input{{a, b}, {b, a}} {
		s := newState()
		for _, in := range order {
			s.mustApply(t, LWW, in)
		}
		wantData(t, s.doc.Data, want)
	}
}

func TestLWW(t *testing.T) {
	t.Run("DifferentFieldsBothSurvive", func(t *testing.T) {
		s := newState()
		s.mustApply(t, LWW, Input{Client: "a", HLC: ts(10, "a"), Ops: MustOps(t, `[{"op":"set","path":"name","value":"Ann"}]`)})
		s.mustApply(t, LWW, Input{Client: "b", HLC: ts(5, "b"), Ops: MustOps(t, `[{"op":"set","path":"email","value":"b@x"}]`)})
		wantData(t, s.doc.Data, `{"name":"Ann","email":"b@x"}`)
	})
	t.Run("LaterStampWinsInEitherOrder", func(t *testing.T) {
		early := Input{Client: "a", HLC: ts(10, "a"), Ops: MustOps(t, `[{"op":"set","path":"name","value":"early"}]`)}
		late := Input{Client: "b", HLC: ts(11, "b"), Ops: MustOps(t, `[{"op":"set","path":"name","value":"late"}]`)}
		wantEitherOrder(t, early, late, `{"name":"late"}`)
	})
	t.Run("TieBrokenByClient", func(t *testing.T) {
		x := Input{Client: "a", HLC: clock.Timestamp{Wall: 10, Node: "n"}, Ops: MustOps(t, `[{"op":"set","path":"v","value":"a"}]`)}
		y := Input{Client: "b", HLC: clock.Timestamp{Wall: 10, Node: "n"}, Ops: MustOps(t, `[{"op":"set","path":"v","value":"b"}]`)}
		wantEitherOrder(t, x, y, `{"v":"b"}`)
	})
	t.Run("UnsetIsATombstone", func(t *testing.T) {
		s := newState()
		s.mustApply(t, LWW, Input{Client: "a", HLC: ts(20, "a"), Ops: MustOps(t, `[{"op":"unset","path":"name"}]`)})
		eff := s.mustApply(t, LWW, Input{Client: "b", HLC: ts(10, "b"), Ops: MustOps(t, `[{"op":"set","path":"name","value":"old"}]`)})
		if len(eff) != 0 {
			t.Fatalf("an older set revived a removed field: %s", jsonString(eff))
		}
		wantData(t, s.doc.Data, `{}`)
	})
	t.Run("ParentNewerThanChild", func(t *testing.T) {
		parent := Input{Client: "a", HLC: ts(20, "a"), Ops: MustOps(t, `[{"op":"set","path":"addr","value":{"city":"Oslo"}}]`)}
		child := Input{Client: "b", HLC: ts(10, "b"), Ops: MustOps(t, `[{"op":"set","path":"addr.zip","value":"0150"}]`)}
		for _, order := range [][]Input{{parent, child}, {child, parent}} {
			s := newState()
			for _, in := range order {
				s.mustApply(t, LWW, in)
			}
			wantData(t, s.doc.Data, `{"addr":{"city":"Oslo"}}`)
		}
	})
	t.Run("ChildNewerThanParent", func(t *testing.T) {
		parent := Input{Client: "a", HLC: ts(10, "a"), Ops: MustOps(t, `[{"op":"set","path":"addr","value":{"city":"Oslo","zip":"0001"}}]`)}
		child := Input{Client: "b", HLC: ts(20, "b"), Ops: MustOps(t, `[{"op":"set","path":"addr.zip","value":"0150"}]`)}
		for _, order := range [][]Input{{parent, child}, {child, parent}} {
			s := newState()
			for _, in := range order {
				s.mustApply(t, LWW, in)
			}
			wantData(t, s.doc.Data, `{"addr":{"city":"Oslo","zip":"0150"}}`)
		}
	})
	t.Run("ChildNewerThanRemovedParent", func(t *testing.T) {
		parent := Input{Client: "a", HLC: ts(10, "a"), Ops: MustOps(t, `[{"op":"unset","path":"addr"}]`)}
		child := Input{Client: "b", HLC: ts(20, "b"), Ops: MustOps(t, `[{"op":"set","path":"addr.zip","value":"0150"}]`)}
		for _, order := range [][]Input{{parent, child}, {child, parent}} {
			s := newState()
			s.mustApply(t, LWW, Input{Client: "z", HLC: ts(1, "z"), Ops: MustOps(t, `[{"op":"set","path":"addr","value":{"city":"Oslo"}}]`)})
			for _, in := range order {
				s.mustApply(t, LWW, in)
			}
			wantData(t, s.doc.Data, `{"addr":{"zip":"0150"}}`)
		}
	})
	t.Run("OfflineOldStamps", func(t *testing.T) {
		// A client edits offline at t=5..7 while others write at t=10.
		// Its edits of untouched fields land; its edit of a field written
		// later loses; its own ops apply in order.
		s := newState()
		s.mustApply(t, LWW, Input{Client: "on", HLC: ts(10, "on"), Ops: MustOps(t, `[{"op":"set","path":"title","value":"online"}]`)})
		s.mustApply(t, LWW, Input{Client: "off", HLC: ts(5, "off"), Base: 0, Ops: MustOps(t, `[{"op":"set","path":"title","value":"offline"},{"op":"set","path":"body","value":"v1"}]`)})
		s.mustApply(t, LWW, Input{Client: "off", HLC: ts(7, "off"), Base: 0, Ops: MustOps(t, `[{"op":"set","path":"body","value":"v2"}]`)})
		wantData(t, s.doc.Data, `{"title":"online","body":"v2"}`)
	})
	t.Run("IncAfterNewerSetIsDropped", func(t *testing.T) {
		s := newState()
		s.mustApply(t, LWW, Input{Client: "a", HLC: ts(10, "a"), Ops: MustOps(t, `[{"op":"set","path":"n","value":100}]`)})
		s.mustApply(t, LWW, Input{Client: "b", HLC: ts(5, "b"), Ops: MustOps(t, `[{"op":"inc","path":"n","value":1}]`)})
		s.mustApply(t, LWW, Input{Client: "c", HLC: ts(15, "c"), Ops: MustOps(t, `[{"op":"inc","path":"n","value":2}]`)})
		wantData(t, s.doc.Data, `{"n":102}`)
	})
	t.Run("SameInputInOrder", func(t *testing.T) {
		s := newState()
		s.mustApply(t, LWW, Input{Client: "a", HLC: ts(10, "a"), Ops: MustOps(t, `[
			{"op":"set","path":"a.b","value":1},
			{"op":"set","path":"a","value":{"c":2}},
			{"op":"set","path":"a.d","value":3},
			{"op":"set","path":"x","value":1},
			{"op":"set","path":"x","value":2}]`)})
		wantData(t, s.doc.Data, `{"a":{"c":2,"d":3},"x":2}`)
	})
}

func TestCRDT(t *testing.T) {
	t.Run("ConcurrentIncrementsAllCount", func(t *testing.T) {
		s := newState()
		for i, c := range []string{"a", "b", "c"} {
			s.mustApply(t, CRDT, Input{Client: c, HLC: ts(int64(10-i), c), Ops: MustOps(t, `[{"op":"inc","path":"likes","value":1}]`)})
		}
		s.mustApply(t, CRDT, Input{Client: "a", HLC: ts(11, "a"), Ops: MustOps(t, `[{"op":"inc","path":"likes","value":-0.5}]`)})
		wantData(t, s.doc.Data, `{"likes":2.5}`)
	})
	t.Run("AddWins", func(t *testing.T) {
		add := Input{Client: "a", HLC: ts(5, "a"), Base: 1, Ops: MustOps(t, `[{"op":"add","path":"tags","value":"red"}]`)}
		rm := Input{Client: "b", HLC: ts(9, "b"), Base: 1, Ops: MustOps(t, `[{"op":"remove","path":"tags","value":"red"}]`)}
		for _, order := range [][]Input{{add, rm}, {rm, add}} {
			s := newState()
			s.mustApply(t, CRDT, Input{Client: "z", HLC: ts(1, "z"), Ops: MustOps(t, `[{"op":"set","path":"tags","value":["red","blue"]}]`)})
			for _, in := range order {
				s.mustApply(t, CRDT, in)
			}
			wantData(t, s.doc.Data, `{"tags":["blue","red"]}`)
		}
	})
	t.Run("RemoveOfSeenAdd", func(t *testing.T) {
		s := newState()
		s.mustApply(t, CRDT, Input{Client: "a", HLC: ts(5, "a"), Ops: MustOps(t, `[{"op":"add","path":"tags","value":"red"}]`)})
		s.mustApply(t, CRDT, Input{Client: "b", HLC: ts(6, "b"), Base: 1, Ops: MustOps(t, `[{"op":"remove","path":"tags","value":"red"}]`)})
		wantData(t, s.doc.Data, `{"tags":[]}`)
		if len(s.doc.Elems) != 0 {
			t.Fatalf("metadata of a removed element left behind: %v", s.doc.Elems)
		}
	})
	t.Run("OwnRemoveCancelsOwnAdd", func(t *testing.T) {
		s := newState()
		s.mustApply(t, CRDT, Input{Client: "a", HLC: ts(5, "a"), Ops: MustOps(t, `[{"op":"add","path":"tags","value":"red"}]`)})
		s.mustApply(t, CRDT, Input{Client: "a", HLC: ts(6, "a"), Base: 0, Ops: MustOps(t, `[{"op":"remove","path":"tags","value":"red"}]`)})
		wantData(t, s.doc.Data, `{"tags":[]}`)
	})
	t.Run("SetWinsOverConcurrentIncrement", func(t *testing.T) {
		set := Input{Client: "a", HLC: ts(5, "a"), Base: 1, Ops: MustOps(t, `[{"op":"set","path":"stats","value":{"likes":0}}]`)}
		inc := Input{Client: "b", HLC: ts(9, "b"), Base: 1, Ops: MustOps(t, `[{"op":"inc","path":"stats.likes","value":1}]`)}
		for _, order := range [][]Input{{set, inc}, {inc, set}} {
			s := newState()
			s.mustApply(t, CRDT, Input{Client: "z", HLC: ts(1, "z"), Ops: MustOps(t, `[{"op":"set","path":"stats","value":{"likes":7}}]`)})
			for _, in := range order {
				s.mustApply(t, CRDT, in)
			}
			wantData(t, s.doc.Data, `{"stats":{"likes":0}}`)
		}
	})
	t.Run("IncrementAfterSeenSet", func(t *testing.T) {
		s := newState()
		s.mustApply(t, CRDT, Input{Client: "a", HLC: ts(5, "a"), Ops: MustOps(t, `[{"op":"set","path":"n","value":10}]`)})
		s.mustApply(t, CRDT, Input{Client: "b", HLC: ts(2, "b"), Base: 1, Ops: MustOps(t, `[{"op":"inc","path":"n","value":1}]`)})
		wantData(t, s.doc.Data, `{"n":11}`)
	})
	t.Run("NestedRegistersByPath", func(t *testing.T) {
		s := newState()
		s.mustApply(t, CRDT, Input{Client: "a", HLC: ts(5, "a"), Ops: MustOps(t, `[{"op":"set","path":"form.name","value":"A"}]`)})
		s.mustApply(t, CRDT, Input{Client: "b", HLC: ts(4, "b"), Ops: MustOps(t, `[{"op":"set","path":"form.email","value":"b@x"}]`)})
		wantData(t, s.doc.Data, `{"form":{"name":"A","email":"b@x"}}`)
	})
	t.Run("TypeMismatchIsRejected", func(t *testing.T) {
		s := newState()
		s.mustApply(t, CRDT, Input{Client: "a", HLC: ts(5, "a"), Ops: MustOps(t, `[{"op":"set","path":"n","value":"x"}]`)})
		if _, err := s.apply(t, CRDT, Input{Client: "a", HLC: ts(6, "a"), Base: 1, Ops: MustOps(t, `[{"op":"inc","path":"n","value":1}]`)}); !errors.Is(err, ErrInvalidOp) {
			t.Fatalf("inc of a string: err = %v", err)
		}
	})
}

func TestStrict(t *testing.T) {
	s := newState()
	s.mustApply(t, Strict, Input{Client: "a", HLC: ts(1, "a"), Base: 0, Ops: MustOps(t, `[{"op":"set","path":"qty","value":1},{"op":"set","path":"note","value":"x"}]`)})
	s.mustApply(t, Strict, Input{Client: "b", HLC: ts(2, "b"), Base: 1, Ops: MustOps(t, `[{"op":"set","path":"qty","value":2}]`)})

	t.Run("ErrConflict", func(t *testing.T) {
		yours := MustOps(t, `[{"op":"set","path":"qty","value":5},{"op":"unset","path":"gone"}]`)
		before := canonical(s.doc)
		_, err := s.apply(t, Strict, Input{Client: "a", HLC: ts(3, "a"), Base: 1, Ops: yours})
		if !errors.Is(err, ErrConflict) {
			t.Fatalf("stale base: err = %v, want ErrConflict", err)
		}
		var ce *ConflictError
		if !errors.As(err, &ce) {
			t.Fatalf("err %T is not a *ConflictError", err)
		}
		want := &ConflictError{Base: 1, Current: 2, Theirs: map[string]any{"qty": 2.0}, Yours: yours}
		if diff := cmp.Diff(want, ce); diff != "" {
			t.Fatalf("ConflictError (-want +got):\n%s", diff)
		}
		b, _ := json.Marshal(ce)
		if got := string(b); got != `{"base":1,"current":2,"theirs":{"qty":2},"yours":[{"op":"set","path":"qty","value":5},{"op":"unset","path":"gone"}]}` {
			t.Fatalf("ConflictError JSON = %s", got)
		}
		if canonical(s.doc) != before {
			t.Fatal("a refused op changed the document")
		}
	})
	t.Run("OK", func(t *testing.T) {
		s.mustApply(t, Strict, Input{Client: "a", HLC: ts(0, "a"), Base: 2, Ops: MustOps(t, `[{"op":"set","path":"qty","value":5}]`)})
		wantData(t, s.doc.Data, `{"qty":5,"note":"x"}`)
	})
}

func TestManual(t *testing.T) {
	setup := func(t *testing.T) *docState {
		s := newState()
		s.mustApply(t, Manual, Input{Client: "alice", HLC: ts(100, "alice"), Base: 0, Ops: MustOps(t, `[{"op":"set","path":"title","value":"Plan"},{"op":"set","path":"body","value":"..."}]`)})
		return s
	}
	t.Run("SequentialWritesDoNotConflict", func(t *testing.T) {
		s := setup(t)
		s.mustApply(t, Manual, Input{Client: "bob", HLC: ts(50, "bob"), Base: 1, Ops: MustOps(t, `[{"op":"set","path":"title","value":"Plan B"}]`)})
		wantData(t, s.doc.Data, `{"title":"Plan B","body":"..."}`)
	})
	t.Run("OwnWritesDoNotConflict", func(t *testing.T) {
		s := setup(t)
		s.mustApply(t, Manual, Input{Client: "alice", HLC: ts(101, "alice"), Base: 0, Ops: MustOps(t, `[{"op":"set","path":"title","value":"Plan 2"}]`)})
		wantData(t, s.doc.Data, `{"title":"Plan 2","body":"..."}`)
	})
	t.Run("SameValueDoesNotConflict", func(t *testing.T) {
		s := setup(t)
		s.mustApply(t, Manual, Input{Client: "bob", HLC: ts(200, "bob"), Base: 0, Ops: MustOps(t, `[{"op":"set","path":"title","value":"Plan"}]`)})
		if Conflicts(s.doc.Data) != nil {
			t.Fatal("equal values recorded as a conflict")
		}
	})
	t.Run("ConcurrentWritesAreKept", func(t *testing.T) {
		s := setup(t)
		s.mustApply(t, Manual, Input{Client: "bob", HLC: ts(90, "bob"), Base: 0, Ops: MustOps(t, `[{"op":"set","path":"title","value":"Roadmap"},{"op":"set","path":"tags","value":["q3"]}]`)})
		wantData(t, s.doc.Data, `{"title":"Plan","body":"...","tags":["q3"],"_conflicts":{"title":[
			{"value":"Plan","by":"alice","v":1,"hlc":"100.0.alice"},
			{"value":"Roadmap","by":"bob","v":2,"hlc":"90.0.bob"}]}}`)
		want := map[string][]Candidate{"title": {
			{Value: json.RawMessage(`"Plan"`), By: "alice", V: 1, HLC: ts(100, "alice")},
			{Value: json.RawMessage(`"Roadmap"`), By: "bob", V: 2, HLC: ts(90, "bob")},
		}}
		if diff := cmp.Diff(want, Conflicts(s.doc.Data)); diff != "" {
			t.Fatalf("Conflicts (-want +got):\n%s", diff)
		}

		// A third writer joins the conflict; the field shows the latest.
		s.mustApply(t, Manual, Input{Client: "carol", HLC: ts(300, "carol"), Base: 1, Ops: MustOps(t, `[{"op":"unset","path":"title"}]`)})
		c := Conflicts(s.doc.Data)["title"]
		if len(c) != 3 || !c[2].Deleted || c[2].By != "carol" {
			t.Fatalf("candidates = %+v", c)
		}
		if _, ok := s.doc.Data["title"]; ok {
			t.Fatal("the field does not show the latest candidate (a removal)")
		}

		t.Run("StaleResolveRefused", func(t *testing.T) {
			before := canonical(s.doc)
			_, err := s.apply(t, Manual, Input{Client: "alice", HLC: ts(400, "alice"), Base: 2, Ops: MustOps(t, `[{"op":"resolve","path":"title","value":"Plan"}]`)})
			var ce *ConflictError
			if !errors.As(err, &ce) || !errors.Is(err, ErrConflict) {
				t.Fatalf("resolve that has not seen carol's value: err = %v", err)
			}
			if len(ce.Conflicts["title"]) != 3 {
				t.Fatalf("ConflictError.Conflicts = %+v", ce.Conflicts)
			}
			if canonical(s.doc) != before {
				t.Fatal("a refused resolve changed the document")
			}
		})
		t.Run("Resolve", func(t *testing.T) {
			eff := s.mustApply(t, Manual, Input{Client: "alice", HLC: ts(400, "alice"), Base: 3, Ops: MustOps(t, `[{"op":"resolve","path":"title","value":"Plan v2"}]`)})
			wantData(t, s.doc.Data, `{"title":"Plan v2","body":"...","tags":["q3"]}`)
			wantEff := MustOps(t, `[{"op":"set","path":"title","value":"Plan v2"},{"op":"unset","path":"_conflicts"}]`)
			if diff := cmp.Diff(wantEff, eff); diff != "" {
				t.Fatalf("effective ops (-want +got):\n%s", diff)
			}
		})
	})
	t.Run("ParentAndChildOverlap", func(t *testing.T) {
		s := newState()
		s.mustApply(t, Manual, Input{Client: "a", HLC: ts(1, "a"), Ops: MustOps(t, `[{"op":"set","path":"addr","value":{"city":"Oslo"}}]`)})
		s.mustApply(t, Manual, Input{Client: "b", HLC: ts(2, "b"), Base: 1, Ops: MustOps(t, `[{"op":"set","path":"addr.city","value":"Bergen"}]`)})
		s.mustApply(t, Manual, Input{Client: "c", HLC: ts(3, "c"), Base: 1, Ops: MustOps(t, `[{"op":"set","path":"addr","value":{"city":"Oslo","zip":"1"}}]`)})
		if c := Conflicts(s.doc.Data)["addr"]; len(c) != 2 || c[0].By != "b" || c[1].By != "c" {
			t.Fatalf("conflicts = %+v", Conflicts(s.doc.Data))
		}
	})
	t.Run("IncrementsMergeWithoutConflict", func(t *testing.T) {
		s := setup(t)
		s.mustApply(t, Manual, Input{Client: "bob", HLC: ts(1, "bob"), Base: 0, Ops: MustOps(t, `[{"op":"inc","path":"views","value":1}]`)})
		s.mustApply(t, Manual, Input{Client: "carol", HLC: ts(1, "carol"), Base: 0, Ops: MustOps(t, `[{"op":"inc","path":"views","value":1}]`)})
		wantData(t, s.doc.Data, `{"title":"Plan","body":"...","views":2}`)
	})
	t.Run("ResolveUnderOtherPoliciesIsASet", func(t *testing.T) {
		s := newState()
		s.mustApply(t, LWW, Input{Client: "a", HLC: ts(1, "a"), Ops: MustOps(t, `[{"op":"resolve","path":"x","value":1},{"op":"resolve","path":"y"}]`)})
		wantData(t, s.doc.Data, `{"x":1}`)
	})
}

// A failing op leaves the document exactly as it was, under every policy,
// even when earlier ops of the same input changed it.
func TestApplyAtomic(t *testing.T) {
	for _, p := range Policies() {
		t.Run(string(p), func(t *testing.T) {
			s := newState()
			s.mustApply(t, p, Input{Client: "a", HLC: ts(1, "a"), Ops: MustOps(t, `[
				{"op":"set","path":"name","value":"x"},{"op":"set","path":"obj","value":{"k":[1,2]}},
				{"op":"add","path":"tags","value":"a"},{"op":"inc","path":"n","value":1}]`)})
			s.mustApply(t, p, Input{Client: "b", HLC: ts(2, "b"), Base: 1, Ops: MustOps(t, `[{"op":"set","path":"name","value":"y"}]`)})
			before, _ := json.Marshal(s.doc)
			_, err := Apply(p, s.doc, Input{Client: "a", HLC: ts(9, "a"), Base: 2, Current: 2, Ops: MustOps(t, `[
				{"op":"set","path":"obj.k","value":{"deep":{"er":1}}},
				{"op":"unset","path":"name"},
				{"op":"set","path":"obj","value":{"z":1}},
				{"op":"set","path":"new.a.b","value":1},
				{"op":"add","path":"tags","value":"b"},
				{"op":"remove","path":"tags","value":"a"},
				{"op":"inc","path":"n","value":5},
				{"op":"resolve","path":"name","value":"r"},
				{"op":"inc","path":"name","value":1}]`)})
			if !errors.Is(err, ErrInvalidOp) {
				t.Fatalf("err = %v, want ErrInvalidOp", err)
			}
			after, _ := json.Marshal(s.doc)
			if string(before) != string(after) {
				t.Fatalf("document changed by a failed op:\nbefore %s\n after %s", before, after)
			}
		})
	}
}

func TestDocClone(t *testing.T) {
	s := newState()
	s.mustApply(t, CRDT, Input{Client: "a", HLC: clock.Timestamp{Wall: 5, Logical: 2, Node: "a"}, Ops: MustOps(t, `[{"op":"set","path":"x.y","value":1},{"op":"add","path":"t","value":"q"}]`)})
	s.mustApply(t, CRDT, Input{Client: "b", HLC: clock.Timestamp{Wall: 6, Node: "srv"}, Base: 1, Ops: MustOps(t, `[{"op":"set","path":"z","value":true}]`)})
	c := s.doc.Clone()
	c.Elems["t"]["\"q\""]["a"] = 99
	if s.doc.Elems["t"]["\"q\""]["a"] != 1 {
		t.Fatal("Clone shares metadata")
	}
}

func TestCloneValue(t *testing.T) {
	v := map[string]any{"a": []any{map[string]any{"b": 1.0}, "s"}, "m": map[string]any{"n": true}}
	c := CloneValue(v).(map[string]any)
	if diff := cmp.Diff(v, c); diff != "" {
		t.Fatalf("CloneValue (-want +got):\n%s", diff)
	}
	c["a"].([]any)[0].(map[string]any)["b"] = 2.0
	c["a"].([]any)[1] = "t"
	c["m"].(map[string]any)["n"] = false
	want := map[string]any{"a": []any{map[string]any{"b": 1.0}, "s"}, "m": map[string]any{"n": true}}
	if diff := cmp.Diff(want, v); diff != "" {
		t.Fatalf("changing the copy changed the value (-want +got):\n%s", diff)
	}
}

func TestApplyUndo(t *testing.T) {
	for _, p := range Policies() {
		s := newState()
		s.mustApply(t, p, Input{Client: "a", HLC: ts(1, "a"), Ops: MustOps(t, `[{"op":"set","path":"x","value":{"y":1}},{"op":"add","path":"t","value":1}]`)})
		before := jsonString(s.doc)
		eff, undo, err := ApplyUndo(p, s.doc, Input{Client: "b", HLC: ts(2, "b"), Base: 1, Current: 1, Ops: MustOps(t, `[
			{"op":"set","path":"x.z","value":2},{"op":"unset","path":"x.y"},{"op":"add","path":"t","value":2},{"op":"inc","path":"n","value":1}]`)})
		if err != nil || len(eff) == 0 {
			t.Fatalf("%s: ApplyUndo = %s, %v", p, jsonString(eff), err)
		}
		undo()
		if after := jsonString(s.doc); after != before {
			t.Fatalf("%s: undo left\n%s\nwant\n%s", p, after, before)
		}
	}
}
