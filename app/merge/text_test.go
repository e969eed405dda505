package merge

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// typeRun types s at pos of t as site, one character per insert, each
// anchored to the one before, as a typist does; it returns the inserts.
type textInsert struct {
	site   string
	clock  uint64
	anchor TextID
	s      string
}

func typeRun(tb testing.TB, t *Text, site string, pos int, s string) []textInsert {
	tb.Helper()
	var out []textInsert
	for _, r := range s {
		var anchor TextID
		if pos > 0 {
			anchor, _ = t.IDAt(pos - 1)
		}
		in := textInsert{site, t.MaxClock() + 1, anchor, string(r)}
		if _, err := t.Insert(in.site, in.clock, in.anchor, in.s); err != nil {
			tb.Fatal(err)
		}
		out = append(out, in)
		pos++
	}
	return out
}

func integrate(tb testing.TB, t *Text, ins []textInsert) {
	tb.Helper()
	for _, in := range ins {
		if _, err := t.Insert(in.site, in.clock, in.anchor, in.s); err != nil {
			tb.Fatal(err)
		}
	}
}

func TestTextConcurrentTypingAtOnePosition(t *testing.T) {
	base := NewText()
	typeRun(t, base, "z", 0, "[]")
	a, b := base.Clone(), base.Clone()
	// Both type a word between the brackets at the same time.
	insA := typeRun(t, a, "ann", 1, "hello")
	insB := typeRun(t, b, "bob", 1, "world")
	integrate(t, a, insB)
	integrate(t, b, insA)
	if a.String() != b.String() {
		t.Fatalf("diverged: %q vs %q", a.String(), b.String())
	}
	// Equal clocks: the greater site (bob) comes first, and neither word is
	// interleaved with the other.
	if got := a.String(); got != "[worldhello]" {
		t.Fatalf("got %q, want [worldhello]", got)
	}
	// Runs stay compact: one run per word plus the brackets.
	if n := len(a.runs); n > 4 {
		t.Fatalf("%d runs for 2 words and a bracket pair", n)
	}
}

func TestTextDeleteAndTombstoneAnchor(t *testing.T) {
	x := NewText()
	typeRun(t, x, "a", 0, "abcdef")
	y := x.Clone()
	// x deletes "cd" while y, offline, types after "d".
	done := x.Delete(x.Live(2, 2))
	if got := x.String(); got != "abef" || len(done) != 1 || done[0].N != 2 {
		t.Fatalf("after delete: %q %v", got, done)
	}
	ins := typeRun(t, y, "b", 4, "XY")
	integrate(t, x, ins)
	y.Delete(done)
	if x.String() != "abXYef" || y.String() != x.String() {
		t.Fatalf("x %q y %q, want abXYef", x.String(), y.String())
	}
	// Deleting again changes nothing.
	if again := x.Delete(done); len(again) != 0 {
		t.Fatalf("repeat delete reported %v", again)
	}
	// Collecting the tombstones keeps the text and later placements.
	z := x.Clone()
	if n := z.Collect(); n != 2 || z.String() != x.String() || z.Tombstones() != 0 {
		t.Fatalf("collect: %d, %q", n, z.String())
	}
	more := typeRun(t, z, "c", 2, "!")
	integrate(t, x, more)
	if x.String() != z.String() {
		t.Fatalf("after collect: %q vs %q", x.String(), z.String())
	}
}

func TestTextUnknownAnchorKeepsText(t *testing.T) {
	x := NewText()
	typeRun(t, x, "a", 0, "abc")
	if _, err := x.Insert("b", 9, TextID{Site: "gone", Clock: 3}, "Z"); err != nil {
		t.Fatal(err)
	}
	if x.String() != "abcZ" {
		t.Fatalf("got %q, want the text at the end", x.String())
	}
}

func TestTextInsertRefusals(t *testing.T) {
	x := NewText()
	typeRun(t, x, "a", 0, "abc") // a@1..a@3
	for _, c := range []struct {
		site   string
		clock  uint64
		anchor TextID
	}{
		{"a", 2, TextID{}},                    // clock reused
		{"b", 1, TextID{Site: "a", Clock: 3}}, // not above its anchor
		{"b", 0, TextID{}},                    // no clock
		{"b", MaxTextClock + 1, TextID{}},     // beyond exact JSON numbers
		{"0", 3, TextID{Site: "a", Clock: 3}}, // equal clock, smaller site
	} {
		before := x.String()
		_, err := x.Insert(c.site, c.clock, c.anchor, "x")
		if !errors.Is(err, ErrInvalidOp) || x.String() != before {
			t.Fatalf("%+v: err %v, text %q", c, err, x.String())
		}
	}
}

// textOp is one edit of the pure CRDT property test, with what its author
// had integrated when making it (causal dependencies).
type textOp struct {
	site, seq int
	deps      []int
	ins       *textInsert
	del       []TextRange
}

type textReplica struct {
	t    *Text
	seen []int
}

func (r *textReplica) ready(op textOp) bool {
	if r.seen[op.site] != op.seq {
		return false
	}
	for s, n := range op.deps {
		if r.seen[s] < n {
			return false
		}
	}
	return true
}

func (r *textReplica) integrate(tb testing.TB, op textOp) {
	tb.Helper()
	if op.ins != nil {
		if _, err := r.t.Insert(op.ins.site, op.ins.clock, op.ins.anchor, op.ins.s); err != nil {
			tb.Fatalf("integrate %+v: %v", *op.ins, err)
		}
	} else {
		r.t.Delete(op.del)
	}
	r.seen[op.site]++
}

// visibleIDs lists the ids of the visible characters in order.
func visibleIDs(t *Text) []TextID {
	var out []TextID
	for i, r := range t.runs {
		if !r.del {
			for k := range r.n {
				out = append(out, t.id(i, k))
			}
		}
	}
	return out
}

// runTextScenario drives n replicas from the random source: local edits,
// deliveries in random causal order, one replica offline for a stretch,
// and finally every op delivered everywhere. It fails unless every replica
// ends with the same string, made of exactly the characters inserted and
// not deleted.
func runTextScenario(tb testing.TB, r *rand.Rand, n, steps int) {
	reps := make([]*textReplica, n)
	for i := range reps {
		reps[i] = &textReplica{t: NewText(), seen: make([]int, n)}
	}
	var log []textOp
	inserted := map[TextID]bool{}
	deleted := map[TextID]bool{}
	offline := r.IntN(n)
	offlineUntil := steps / 2
	letters := "abcdefghijklmnopqrstuvwxyz"
	deliver := func(i int) bool {
		rep := reps[i]
		var ready []textOp
		for _, op := range log {
			if op.site != i && rep.ready(op) {
				ready = append(ready, op)
			}
		}
		if len(ready) == 0 {
			return false
		}
		rep.integrate(tb, ready[r.IntN(len(ready))])
		return true
	}
	for step := range steps {
		i := r.IntN(n)
		rep := reps[i]
		if r.IntN(3) > 0 || (i == offline && step < offlineUntil) {
			op := textOp{site: i, seq: rep.seen[i], deps: slices.Clone(rep.seen)}
			if rep.t.Len() == 0 || r.IntN(3) > 0 {
				pos := r.IntN(rep.t.Len() + 1)
				var anchor TextID
				if pos > 0 {
					anchor, _ = rep.t.IDAt(pos - 1)
				}
				s := strings.Repeat(string(letters[i]), 1+r.IntN(3))
				in := textInsert{fmt.Sprintf("s%d", i), rep.t.MaxClock() + 1, anchor, s}
				op.ins = &in
				for k := range len(s) {
					inserted[TextID{in.site, in.clock + uint64(k)}] = true
				}
			} else {
				op.del = rep.t.Live(r.IntN(rep.t.Len()), 1+r.IntN(4))
				for _, rg := range op.del {
					for k := range rg.N {
						deleted[TextID{rg.Site, rg.Clock + uint64(k)}] = true
					}
				}
			}
			log = append(log, op)
			rep.integrate(tb, op)
			continue
		}
		deliver(i)
	}
	for i := range reps {
		for deliver(i) {
		}
	}
	want := reps[0].t.String()
	for i, rep := range reps {
		if got := rep.t.String(); got != want {
			tb.Fatalf("replica %d: %q, replica 0: %q", i, got, want)
		}
		total := 0
		for _, k := range rep.seen {
			total += k
		}
		if total != len(log) {
			tb.Fatalf("replica %d integrated %d of %d ops", i, total, len(log))
		}
	}
	checkVisible(tb, reps[0].t, inserted, deleted)
}

// checkVisible fails unless the visible characters of t are exactly those
// inserted and not deleted.
func checkVisible(tb testing.TB, t *Text, inserted, deleted map[TextID]bool) {
	tb.Helper()
	ids := visibleIDs(t)
	live := 0
	for id := range inserted {
		if !deleted[id] {
			live++
		}
	}
	if len(ids) != live {
		tb.Fatalf("%d visible characters, want %d (inserted and not deleted)", len(ids), live)
	}
	for _, id := range ids {
		if !inserted[id] || deleted[id] {
			tb.Fatalf("visible character %s was not inserted or was deleted", id)
		}
	}
}

// TestTextConverges: 3-5 replicas, random concurrent inserts and deletes,
// random causal delivery orders, one replica offline for half the run.
// 200 scenarios, 40 under -short.
func TestTextConverges(t *testing.T) {
	n := 200
	if testing.Short() {
		n = 40
	}
	for c := range n {
		r := rand.New(rand.NewPCG(uint64(c), 7))
		n := 3 + c%3
		t.Run(fmt.Sprint(c), func(t *testing.T) { runTextScenario(t, r, n, 20+r.IntN(60)) })
	}
}

// FuzzTextConverges runs the convergence property from fuzzed seeds.
func FuzzTextConverges(f *testing.F) {
	f.Add(uint64(1), uint8(3), uint8(40))
	f.Add(uint64(99), uint8(5), uint8(120))
	f.Fuzz(func(t *testing.T, seed uint64, n, steps uint8) {
		runTextScenario(t, rand.New(rand.NewPCG(seed, 7)), 3+int(n)%3, int(steps))
	})
}

// Through the policies: clients edit their copies offline and the server
// merges their ops in any order.

func textClient(tb testing.TB, plain map[string]any, site string, r *rand.Rand, n int) []Input {
	tb.Helper()
	copyData := cloneMap(plain)
	var out []Input
	for i := range n {
		t, err := TextOf(copyData, "notes")
		if err != nil {
			tb.Fatal(err)
		}
		var op FieldOp
		if t.Len() > 0 && r.IntN(3) == 0 {
			var ok bool
			if op, ok, err = DeleteOp(copyData, "notes", r.IntN(t.Len()), 1+r.IntN(3)); err != nil || !ok {
				tb.Fatalf("DeleteOp: %v %v", ok, err)
			}
		} else if op, err = InsertOp(copyData, "notes", site, r.IntN(t.Len()+1), strings.Repeat(site[:1], 1+r.IntN(3))); err != nil {
			tb.Fatal(err)
		}
		if err := ApplyPlain(copyData, []FieldOp{op}); err != nil {
			tb.Fatalf("own op %s: %v", jsonString(op), err)
		}
		out = append(out, Input{Client: site, HLC: ts(int64(10+i), site), Ops: []FieldOp{op}})
	}
	return out
}

func TestTextThroughPolicies(t *testing.T) {
	for _, p := range []Policy{LWW, CRDT, Manual} {
		for c := range 30 {
			t.Run(fmt.Sprintf("%s/%d", p, c), func(t *testing.T) {
				g := newGen(uint64(c))
				init := Input{Client: "init", HLC: ts(1, "init"), Text: map[string]bool{"notes": true},
					Ops: []FieldOp{{Op: KindSet, Path: "notes", Value: json.RawMessage(`"shared start"`)}}}
				s := newState()
				s.mustApply(t, p, init)
				var sc scenario
				sc.init = []Input{init}
				for k := range 3 + c%3 {
					seq := textClient(t, s.plain, fmt.Sprintf("%c%d", 'a'+k, k), g.r, 1+g.r.IntN(6))
					for i := range seq {
						seq[i].Base = 1
					}
					sc.clients = append(sc.clients, seq)
				}
				var want string
				for o := range 4 {
					d := run(t, p, sc, g.interleave(sc.clients...))
					got, _ := d.Data["notes"].(string)
					if o == 0 {
						want = got
					} else if got != want {
						t.Fatalf("delivery order %d gave %q, order 0 gave %q", o, got, want)
					}
				}
				// Exactly the characters inserted and not deleted are visible.
				d := run(t, p, sc, g.interleave(sc.clients...))
				txt, err := TextOf(d.Data, "notes")
				if err != nil {
					t.Fatal(err)
				}
				inserted, deleted := map[TextID]bool{}, map[TextID]bool{}
				for i := range 12 {
					inserted[TextID{"init", uint64(i + 1)}] = true
				}
				for _, seq := range sc.clients {
					for _, in := range seq {
						for _, op := range in.Ops {
							if op.Op == KindIns {
								v, _ := parseIns(op.Value)
								for k := range len([]rune(v.text)) {
									inserted[TextID{v.site, v.clock + uint64(k)}] = true
								}
							} else {
								v, _ := parseDel(op.Value)
								for _, rg := range v.ranges {
									for k := range rg.N {
										deleted[TextID{rg.Site, rg.Clock + uint64(k)}] = true
									}
								}
							}
						}
					}
				}
				checkVisible(t, txt, inserted, deleted)
			})
		}
	}
}

func TestTextSetAndOtherWrites(t *testing.T) {
	text := map[string]bool{"notes": true}
	for _, p := range []Policy{LWW, CRDT, Manual, Strict} {
		t.Run(string(p), func(t *testing.T) {
			s := newState()
			s.mustApply(t, p, Input{Client: "a", HLC: ts(1, "a"), Text: text, Ops: MustOps(t, `[{"op":"set","path":"notes","value":"abc"}]`)})
			if !IsText(s.doc.Data, "notes") {
				t.Fatal("a set of a declared text field did not make it text")
			}
			// b types after "b" (a@2).
			s.mustApply(t, p, Input{Client: "b", HLC: ts(2, "b"), Base: 1, Text: text, Ops: MustOps(t, `[{"op":"ins","path":"notes","value":["b",4,"a@2","B"]}]`)})
			wantData(t, map[string]any{"notes": s.doc.Data["notes"]}, `{"notes":"abBc"}`)
			if p == Strict {
				_, err := s.apply(t, p, Input{Client: "c", HLC: ts(3, "c"), Base: 1, Ops: MustOps(t, `[{"op":"ins","path":"notes","value":[0,"x"]}]`)})
				if !errors.Is(err, ErrConflict) {
					t.Fatalf("stale text op under strict: %v", err)
				}
				return
			}
			// c, who saw version 1, replaces the text; d, who saw it too,
			// types after "a" and arrives later: d's character is kept,
			// after the new content (its anchor was replaced).
			s.mustApply(t, p, Input{Client: "c", HLC: ts(3, "c"), Base: 1, Text: text, Ops: MustOps(t, `[{"op":"set","path":"notes","value":"xyz"}]`)})
			s.mustApply(t, p, Input{Client: "d", HLC: ts(4, "d"), Base: 1, Text: text, Ops: MustOps(t, `[{"op":"ins","path":"notes","value":["d",4,"a@1","D"]}]`)})
			if got := s.doc.Data["notes"]; got != "xyzD" {
				t.Fatalf("notes = %q, want xyzD", got)
			}
			if s.doc.TextDel["notes"] != 3 {
				t.Fatalf("last delete version %d, want 3", s.doc.TextDel["notes"])
			}
			// Relative ops do not apply to text; a site that is not the
			// author's is refused.
			for _, ops := range []string{
				`[{"op":"inc","path":"notes","value":1}]`,
				`[{"op":"ins","path":"notes","value":["a",99,"","x"]}]`,
				`[{"op":"ins","path":"notes","value":["d",4,"","x"]}]`,
			} {
				before := jsonString(s.doc)
				if _, err := s.apply(t, p, Input{Client: "d", HLC: ts(5, "d"), Base: 4, Ops: MustOps(t, ops)}); !errors.Is(err, ErrInvalidOp) || jsonString(s.doc) != before {
					t.Fatalf("%s: %v", ops, err)
				}
			}
			// A device suffix is the author's site.
			s.mustApply(t, p, Input{Client: "d", HLC: ts(6, "d"), Base: 4, Ops: MustOps(t, `[{"op":"ins","path":"notes","value":["d~tab2",9,"","<"]}]`)})
			// A whole-value write of the field replaces the text and its
			// metadata on the server and on a client copy alike (apply
			// checks the copy).
			s.mustApply(t, p, Input{Client: "e", HLC: ts(7, "e"), Base: 5, Ops: MustOps(t, `[{"op":"set","path":"notes","value":{"k":1}}]`)})
			if IsText(s.doc.Data, "notes") {
				t.Fatal("text metadata survived an object write")
			}
		})
	}
}

// TestTextCollect: dropping tombstones keeps the text, leaves a client's
// copy (which still holds them) placing later edits identically, and only
// happens once the last delete is below the horizon.
func TestTextCollect(t *testing.T) {
	s := newState()
	s.mustApply(t, CRDT, Input{Client: "a", HLC: ts(1, "a"), Ops: MustOps(t, `[{"op":"ins","path":"notes","value":[0,"hello world"]}]`)})
	s.mustApply(t, CRDT, Input{Client: "a", HLC: ts(2, "a"), Base: 1, Ops: MustOps(t, `[{"op":"del","path":"notes","value":[5,6]}]`)})
	if TextGarbage(s.doc, 2) || CollectText(s.doc, 2) != 0 {
		t.Fatal("collected tombstones of a delete inside the window")
	}
	before, _ := json.Marshal(s.doc.Data[TextKey])
	if !TextGarbage(s.doc, 3) || CollectText(s.doc, 3) != 6 || s.doc.TextDel != nil {
		t.Fatalf("did not collect: %v", s.doc.TextDel)
	}
	after, _ := json.Marshal(s.doc.Data[TextKey])
	if len(after) >= len(before) || s.doc.Data["notes"] != "hello" {
		t.Fatalf("metadata %s -> %s, text %q", before, after, s.doc.Data["notes"])
	}
	// A client copy that still holds the tombstones shows the same text
	// after later edits: one anchored inside the collected range lands at
	// the end, one anchored before it at its place.
	plain := s.plain
	for i, ops := range []string{
		`[{"op":"ins","path":"notes","value":["b",12,"a@8","!"]}]`,
		`[{"op":"ins","path":"notes","value":["b",13,"a@2","?"]}]`,
		`[{"op":"ins","path":"notes","value":["b",14,"b@12","."]}]`,
	} {
		eff, err := Apply(CRDT, s.doc, Input{Client: "b", HLC: ts(int64(3+i), "b"), Base: 1, Current: int64(2 + i), Ops: MustOps(t, ops)})
		if err != nil {
			t.Fatal(err)
		}
		if err := ApplyPlain(plain, eff); err != nil {
			t.Fatal(err)
		}
	}
	if s.doc.Data["notes"] != "he?llo!." || plain["notes"] != s.doc.Data["notes"] {
		t.Fatalf("server %q, client %q", s.doc.Data["notes"], plain["notes"])
	}
}
