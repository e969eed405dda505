package merge

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/open-autoglm/autoglm/app/clock"
)

// Property tests. Every case is generated from a fixed seed, so a failure
// reproduces with the same `go test -run` and the printed case number.
//
// The delivery model is the service's: one server applies ops serially;
// each client's ops arrive in its op-id order, interleaved in any way with
// the other clients' ops; clients that edit concurrently (offline, or at the
// same time) base all their ops on the version they last saw.

// gen draws ops. lww scenarios use only whole-value writes (set/unset) on
// nested paths; crdt scenarios use every kind on well-typed paths (a path is
// always used as a register, a counter or a set).
type gen struct{ r *rand.Rand }

func newGen(seed uint64) gen { return gen{rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))} }

func (g gen) pick(xs ...string) string { return xs[g.r.IntN(len(xs))] }

func (g gen) scalar() string {
	return g.pick(`1`, `2`, `-3.5`, `"s"`, `"t"`, `true`, `false`, `null`, `[1,"x"]`)
}

func (g gen) object() string {
	var parts []string
	if g.r.IntN(2) == 0 {
		if g.r.IntN(2) == 0 {
			parts = append(parts, `"x":{"k":`+g.scalar()+`}`)
		} else {
			parts = append(parts, `"x":`+g.scalar())
		}
	}
	if g.r.IntN(2) == 0 {
		parts = append(parts, `"y":`+g.scalar())
	}
	return "{" + strings.Join(parts, ",") + "}"
}

var lwwPaths = []string{"a", "a.x", "a.x.k", "a.y", "b", "b.x", "c"}

func (g gen) lwwOp() FieldOp {
	p := g.pick(lwwPaths...)
	if g.r.IntN(4) == 0 {
		return FieldOp{Op: KindUnset, Path: p}
	}
	v := g.scalar()
	if (p == "a" || p == "a.x" || p == "b") && g.r.IntN(2) == 0 {
		v = g.object()
	}
	return FieldOp{Op: KindSet, Path: p, Value: json.RawMessage(v)}
}

var (
	crdtRegisters = []string{"r1", "r2", "obj.r"}
	crdtCounters  = []string{"cnt", "obj.cnt"}
	crdtSets      = []string{"tags", "obj.tags"}
)

func (g gen) element() string { return g.pick(`"a"`, `"b"`, `"c"`, `"d"`) }

func (g gen) crdtOp() FieldOp {
	switch n := g.r.IntN(20); {
	case n < 3:
		return FieldOp{Op: KindSet, Path: g.pick(crdtRegisters...), Value: json.RawMessage(g.scalar())}
	case n < 4:
		var parts []string
		if g.r.IntN(2) == 0 {
			parts = append(parts, `"r":`+g.scalar())
		}
		if g.r.IntN(2) == 0 {
			parts = append(parts, fmt.Sprintf(`"cnt":%d`, g.r.IntN(5)))
		}
		if g.r.IntN(2) == 0 {
			parts = append(parts, `"tags":[`+g.element()+`]`)
		}
		return FieldOp{Op: KindSet, Path: "obj", Value: json.RawMessage("{" + strings.Join(parts, ",") + "}")}
	case n < 5:
		all := append(append(append([]string{"obj"}, crdtRegisters...), crdtCounters...), crdtSets...)
		return FieldOp{Op: KindUnset, Path: g.pick(all...)}
	case n < 6:
		return FieldOp{Op: KindSet, Path: g.pick(crdtCounters...), Value: json.RawMessage(fmt.Sprint(g.r.IntN(10)))}
	case n < 7:
		return FieldOp{Op: KindSet, Path: g.pick(crdtSets...), Value: json.RawMessage(`[` + g.element() + `,` + g.element() + `]`)}
	case n < 12:
		return FieldOp{Op: KindInc, Path: g.pick(crdtCounters...), Value: json.RawMessage(fmt.Sprint(g.r.IntN(7) - 2))}
	case n < 16:
		return FieldOp{Op: KindAdd, Path: g.pick(crdtSets...), Value: json.RawMessage(g.element())}
	default:
		return FieldOp{Op: KindRemove, Path: g.pick(crdtSets...), Value: json.RawMessage(g.element())}
	}
}

func (g gen) ops(p Policy) []FieldOp {
	ops := make([]FieldOp, 1+g.r.IntN(3))
	for i := range ops {
		if p == LWW {
			ops[i] = g.lwwOp()
		} else {
			ops[i] = g.crdtOp()
		}
	}
	return ops
}

// scenario is a shared starting history (init, applied in order) and the
// concurrent op sequences of several clients, all based on the version the
// init history ends at.
type scenario struct {
	init    []Input
	clients [][]Input
}

func (g gen) scenario(p Policy, nClients, maxOps int) scenario {
	var sc scenario
	wall := int64(0)
	for i := range g.r.IntN(4) {
		wall += int64(g.r.IntN(3))
		sc.init = append(sc.init, Input{Client: "init", HLC: clock.Timestamp{Wall: wall, Logical: uint32(i), Node: "init"}, Base: int64(i), Ops: g.ops(p)})
	}
	base := int64(len(sc.init))
	for c := range nClients {
		id := fmt.Sprintf("c%d", c)
		// Small wall ranges make equal wall times (ties broken by counter
		// and node) common; each client's stamps increase.
		hlc := clock.Timestamp{Wall: int64(g.r.IntN(8)), Node: id}
		var seq []Input
		for range 1 + g.r.IntN(maxOps) {
			if g.r.IntN(2) == 0 {
				hlc.Wall += int64(1 + g.r.IntN(3))
				hlc.Logical = 0
			} else {
				hlc.Logical++
			}
			seq = append(seq, Input{Client: id, HLC: hlc, Base: base, Ops: g.ops(p)})
		}
		sc.clients = append(sc.clients, seq)
	}
	return sc
}

// interleave returns a random merge of the sequences that keeps each one's
// order.
func (g gen) interleave(seqs ...[]Input) []Input {
	var slots []int
	for i, s := range seqs {
		for range s {
			slots = append(slots, i)
		}
	}
	g.r.Shuffle(len(slots), func(i, j int) { slots[i], slots[j] = slots[j], slots[i] })
	next := make([]int, len(seqs))
	out := make([]Input, 0, len(slots))
	for _, s := range slots {
		out = append(out, seqs[s][next[s]])
		next[s]++
	}
	return out
}

// run applies the init history and then the deliveries, like the server:
// each accepted op advances the version. It checks the
// client copy after the last delivery and returns the document.
func run(tb testing.TB, p Policy, sc scenario, deliveries []Input) *Doc {
	tb.Helper()
	s := newState()
	for _, in := range append(append([]Input{}, sc.init...), deliveries...) {
		in.Current = s.version
		eff, err := Apply(p, s.doc, in)
		if err != nil {
			tb.Fatalf("Apply(%s by %s): %v", jsonString(in.Ops), in.Client, err)
		}
		s.version++
		checkEffective(tb, eff)
		if err := ApplyPlain(s.plain, eff); err != nil {
			tb.Fatalf("ApplyPlain(%s): %v", jsonString(eff), err)
		}
	}
	if a, b := canonical(s.plain), canonical(s.doc.Data); a != b {
		tb.Fatalf("client copy diverged:\n plain %s\n   doc %s", a, b)
	}
	return s.doc
}

func describe(sc scenario, orders ...[]Input) string {
	var b strings.Builder
	for _, in := range sc.init {
		fmt.Fprintf(&b, "  init %s %s\n", in.HLC, jsonString(in.Ops))
	}
	for i, o := range orders {
		fmt.Fprintf(&b, " order %d:\n", i)
		for _, in := range o {
			fmt.Fprintf(&b, "  %s %s base %d %s\n", in.Client, in.HLC, in.Base, jsonString(in.Ops))
		}
	}
	return b.String()
}

// propCases is the number of generated cases per property: 1000, or 100
// under -short (make test-unit); make test runs them all.
func propCases() int {
	if testing.Short() {
		return 100
	}
	return 1000
}

// Convergence: 3–5 clients' concurrent sequences, delivered in several
// random orders, give the same document.
func TestPropConverges(t *testing.T) {
	propCheck(t, 1, "× 4 delivery orders", func(t *testing.T, p Policy, g gen, i int) {
		sc := g.scenario(p, 3+g.r.IntN(3), 4)
		first := g.interleave(sc.clients...)
		want := canonical(run(t, p, sc, first).Data)
		for range 3 {
			order := g.interleave(sc.clients...)
			if got := canonical(run(t, p, sc, order).Data); got != want {
				t.Fatalf("case %d: orders disagree\n  %s\n  %s\n%s", i, want, got, describe(sc, first, order))
			}
		}
	})
}

// propCheck runs check on propCases cases for LWW and for CRDT, each
// policy a parallel subtest with a generator seeded with seed; note says
// what a case is made of, in the log.
func propCheck(t *testing.T, seed uint64, note string, check func(t *testing.T, p Policy, g gen, i int)) {
	for _, p := range []Policy{LWW, CRDT} {
		t.Run(string(p), func(t *testing.T) {
			t.Parallel()
			g := newGen(seed)
			for i := range propCases() {
				check(t, p, g, i)
			}
			t.Logf("%d cases %s", propCases(), note)
		})
	}
}

// Commutativity: two concurrent ops from different clients applied in
// either order give the same document.
func TestPropCommutative(t *testing.T) {
	propCheck(t, 2, "of two ops", func(t *testing.T, p Policy, g gen, i int) {
		sc := g.scenario(p, 2, 1)
		x, y := sc.clients[0], sc.clients[1]
		xy := canonical(run(t, p, sc, append(append([]Input{}, x...), y...)).Data)
		yx := canonical(run(t, p, sc, append(append([]Input{}, y...), x...)).Data)
		if xy != yx {
			t.Fatalf("case %d: x·y = %s, y·x = %s\n%s", i, xy, yx, describe(sc, append(x, y...)))
		}
	})
}

// Associativity: merging three clients' logs as (A ⊔ B) ⊔ C or as
// A ⊔ (B ⊔ C), where ⊔ interleaves two logs, gives the same document.
func TestPropAssociative(t *testing.T) {
	propCheck(t, 3, "of three logs", func(t *testing.T, p Policy, g gen, i int) {
		sc := g.scenario(p, 3, 3)
		a, b, c := sc.clients[0], sc.clients[1], sc.clients[2]
		left := g.interleave(g.interleave(a, b), c)
		right := g.interleave(a, g.interleave(b, c))
		if l, r := canonical(run(t, p, sc, left).Data), canonical(run(t, p, sc, right).Data); l != r {
			t.Fatalf("case %d: (A⊔B)⊔C = %s, A⊔(B⊔C) = %s\n%s", i, l, r, describe(sc, left, right))
		}
	})
}

// For every policy, a client that applies the effective ops of each change
// to its plain copy holds exactly the server's data, whatever the bases of
// the ops (fresh, stale, offline), including ops that are refused (which
// must leave the document unchanged) and documents that are stored and
// reloaded in between.
func TestPropPlainReplay(t *testing.T) {
	for _, p := range Policies() {
		t.Run(string(p), func(t *testing.T) {
			t.Parallel()
			g := newGen(5)
			accepted, refused, conflicted, resolved := 0, 0, 0, 0
			for i := range propCases() {
				s := newState()
				seen := map[string]int64{}
				hlc := map[string]clock.Timestamp{}
				for step := range 12 {
					c := g.pick("a", "b", "c")
					if g.r.IntN(2) == 0 {
						seen[c] = s.version
					}
					h := hlc[c]
					h.Wall += int64(g.r.IntN(3))
					h.Logical++
					h.Node = c
					hlc[c] = h
					in := Input{Client: c, HLC: h, Base: seen[c], Ops: g.ops(CRDT)}
					if p == LWW && g.r.IntN(2) == 0 {
						in.Ops = g.ops(LWW)
					}
					switch n := g.r.IntN(10); {
					case n == 0:
						// Ill-typed on purpose: increments a register.
						in.Ops = append(in.Ops, FieldOp{Op: KindInc, Path: g.pick(crdtRegisters...), Value: json.RawMessage(`1`)})
					case n < 3:
						for path := range Conflicts(s.doc.Data) {
							if g.r.IntN(2) == 0 {
								in.Ops = []FieldOp{{Op: KindResolve, Path: path, Value: json.RawMessage(g.scalar())}}
							} else {
								in.Ops = []FieldOp{{Op: KindResolve, Path: path}}
							}
							break
						}
					}
					before := s.doc.Clone()
					if _, err := s.apply(t, p, in); err != nil {
						if !errors.Is(err, ErrInvalidOp) && !errors.Is(err, ErrConflict) {
							t.Fatalf("case %d step %d: unexpected error %v", i, step, err)
						}
						if jsonString(before) != jsonString(s.doc) {
							t.Fatalf("case %d step %d: refused op %s changed the document\nbefore %s\n after %s", i, step, jsonString(in.Ops), jsonString(before), jsonString(s.doc))
						}
						refused++
						continue
					}
					accepted++
					if in.Ops[0].Op == KindResolve {
						resolved++
					}
					if Conflicts(s.doc.Data) != nil {
						conflicted++
					}
					if g.r.IntN(4) == 0 { // store and reload
						b, _ := json.Marshal(s.doc)
						var back Doc
						if err := json.Unmarshal(b, &back); err != nil {
							t.Fatal(err)
						}
						s.doc = &back
					}
				}
			}
			t.Logf("%d cases (%d ops accepted, %d refused; %d left a conflict open, %d resolves)", propCases(), accepted, refused, conflicted, resolved)
		})
	}
	t.Logf("%d cases in all", propCases()*len(Policies()))
}
