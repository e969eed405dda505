package merge

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/open-autoglm/autoglm/app/clock"
)

// benchDoc builds a document of about 10 KB of data: 20 sections of six
// fields, each field written by its own op (so it carries its own stamp),
// plus a counter and a set.
func benchDoc(b *testing.B, p Policy) (*Doc, int64) {
	b.Helper()
	d := NewDoc()
	var v int64
	for s := range 20 {
		var ops []FieldOp
		for f := range 6 {
			val := fmt.Sprintf("%q", strings.Repeat(string(rune('a'+f)), 65+s))
			ops = append(ops, FieldOp{Op: KindSet, Path: fmt.Sprintf("s%d.f%d", s, f), Value: json.RawMessage(val)})
		}
		if _, err := Apply(p, d, Input{Client: "init", HLC: ts(int64(1+s), "init"), Base: v, Current: v, Ops: ops}); err != nil {
			b.Fatal(err)
		}
		v++
	}
	ops := MustOps(b, `[{"op":"set","path":"n","value":0},{"op":"set","path":"tags","value":["a","b","c","d","e","f","g","h"]}]`)
	if _, err := Apply(p, d, Input{Client: "init", HLC: ts(100, "init"), Base: v, Current: v, Ops: ops}); err != nil {
		b.Fatal(err)
	}
	v++
	data, _ := json.Marshal(d.Data)
	if n := len(data); n < 9_000 || n > 11_000 {
		b.Fatalf("bench document is %d bytes, want about 10 KB", n)
	}
	return d, v
}

// BenchmarkApply measures one Input on a 10 KB document, in place, as the
// server merges it.
func BenchmarkApply(b *testing.B) {
	cases := []struct {
		name string
		p    Policy
		ops  string
		old  bool // stamp every op in the past (an offline client)
	}{
		{"lww/set", LWW, `[{"op":"set","path":"s7.f3","value":"hello"}]`, false},
		{"lww/set-10-fields", LWW, `[` + strings.TrimSuffix(strings.Repeat(`{"op":"set","path":"s9.f1","value":"x"},`, 10), ",") + `]`, false},
		{"lww/set-object-under-newer-fields", LWW, `[{"op":"set","path":"s4","value":{"f0":"x"}}]`, true},
		{"crdt/inc", CRDT, `[{"op":"inc","path":"n","value":1}]`, false},
		{"crdt/add", CRDT, `[{"op":"add","path":"tags","value":"zz"}]`, false},
		{"strict/set", Strict, `[{"op":"set","path":"s7.f3","value":"hello"}]`, false},
		{"manual/set", Manual, `[{"op":"set","path":"s7.f3","value":"hello"}]`, false},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			d, v := benchDoc(b, c.p)
			ops := MustOps(b, c.ops)
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				hlc := clock.Timestamp{Wall: 1_000 + int64(i), Node: "c"}
				if c.old {
					hlc = clock.Timestamp{Wall: 0, Node: "c"}
				}
				if _, err := Apply(c.p, d, Input{Client: "c", HLC: hlc, Base: v, Current: v, Ops: ops}); err != nil {
					b.Fatal(err)
				}
				v++
			}
		})
	}
}

// BenchmarkClone is the cost a caller pays to copy the whole document
// before each op; Apply does not need it.
func BenchmarkClone(b *testing.B) {
	d, _ := benchDoc(b, LWW)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		_ = d.Clone()
	}
}
