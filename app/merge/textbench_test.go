package merge

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

// textDoc builds a text of about size characters written in bursts of 50
// at random places by 5 authors (a few thousand runs), as the Yjs
// comparison does (app/web/scripts/textbench.mjs).
func textDoc(b *testing.B, size int) (*Doc, int64) {
	b.Helper()
	r := rand.New(rand.NewPCG(2, 0))
	d := NewDoc()
	var v int64
	for n := 0; n < size; n += 50 {
		site := fmt.Sprintf("c-%d", r.IntN(5))
		pos := r.IntN(n + 1)
		op, err := InsertOp(d.Data, "notes", site, pos, strings.Repeat(string(rune('a'+r.IntN(26))), 50))
		if err != nil {
			b.Fatal(err)
		}
		if _, err := Apply(LWW, d, Input{Client: site, HLC: ts(v+1, site), Base: v, Current: v, Ops: []FieldOp{op}}); err != nil {
			b.Fatal(err)
		}
		v++
	}
	return d, v
}

// BenchmarkTextApply100KB: the server's cost of one single-character insert
// or delete at a random place of a 100 KB text (docs/benchmarks.md). The
// ops are made in chunks on a copy of the document, outside the timer.
func BenchmarkTextApply100KB(b *testing.B) {
	d, v := textDoc(b, 100_000)
	t, _ := TextOf(d.Data, "notes")
	b.ReportMetric(float64(len(t.runs)), "runs")
	r := rand.New(rand.NewPCG(3, 0))
	var ops []FieldOp
	b.ResetTimer()
	for i := range b.N {
		if i%500 == 0 {
			b.StopTimer()
			ops = ops[:0]
			gen := d.Clone()
			for k := range 500 {
				tx, _ := TextOf(gen.Data, "notes")
				var op FieldOp
				if k%3 == 2 {
					op, _, _ = DeleteOp(gen.Data, "notes", r.IntN(tx.Len()), 1)
				} else {
					op, _ = InsertOp(gen.Data, "notes", "bench", r.IntN(tx.Len()+1), "x")
				}
				if err := ApplyPlain(gen.Data, []FieldOp{op}); err != nil {
					b.Fatal(err)
				}
				ops = append(ops, op)
			}
			b.StartTimer()
		}
		if _, err := Apply(LWW, d, Input{Client: "bench", HLC: ts(v+1, "bench"), Base: v, Current: v, Ops: []FieldOp{ops[i%500]}}); err != nil {
			b.Fatal(err)
		}
		v++
	}
}
