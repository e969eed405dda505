package core

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/open-autoglm/autoglm/app/merge"
)

func TestClientOpsEncoding(t *testing.T) {
	var c *ClientOps
	for i, id := range []uint64{7, 3, 1 << 62, 12, 5} {
		c = c.With(OpRecord{OpID: id, Version: int64(100 - i*7), Digest: uint64(i) * 0x9e3779b97f4a7c15}, 1_700_000_000_000+int64(i))
	}
	c.Floor = 2
	doc := Document{Version: 100, Idem: map[string]*ClientOps{"alice": c, "bob": (*ClientOps)(nil).With(OpRecord{OpID: 1, Version: 1, Digest: 1}, 5)}}
	b, err := json.Marshal(&doc)
	if err != nil {
		t.Fatal(err)
	}
	var back Document
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(doc.Idem, back.Idem); d != "" {
		t.Fatalf("round trip (-want +got):\n%s\n%s", d, b)
	}
	for _, bad := range []string{`"!!"`, `""`, `"AQ"`, `"AQEBAQ"`, `7`} {
		var c ClientOps
		if err := json.Unmarshal([]byte(bad), &c); err == nil {
			t.Errorf("%s decoded as %+v", bad, c)
		}
	}
}

func TestClientOpsWindow(t *testing.T) {
	var c *ClientOps
	for id := uint64(1); id <= IdemPerClient+3; id++ {
		if id == 2 {
			continue // never applied
		}
		prev := c
		c = c.With(OpRecord{OpID: id, Version: int64(id)}, 0)
		if prev != nil && len(prev.Recent) >= len(c.Recent) && prev.Recent[0].OpID == c.Recent[0].OpID {
			t.Fatal("With changed the record in place")
		}
	}
	if len(c.Recent) != IdemPerClient || c.Floor != 3 {
		t.Fatalf("%d remembered, floor %d", len(c.Recent), c.Floor)
	}
	for id, want := range map[uint64]bool{1: true, 2: true, 3: true, 4: false, 100: false} {
		if c.Expired(id) != want {
			t.Errorf("Expired(%d) = %v", id, !want)
		}
	}
	if r, ok := c.Find(4); !ok || r.Version != 4 {
		t.Fatalf("Find(4) = %+v %v", r, ok)
	}
}

func TestBoundIdem(t *testing.T) {
	ops := map[string]*ClientOps{}
	v := int64(0)
	opsPer := IdemPerDocument/IdemClients + 2 // more than the document may hold
	for n := range IdemClients + 10 {
		var c *ClientOps
		for id := range uint64(opsPer) {
			v++
			c = c.With(OpRecord{OpID: id + 1, Version: v}, int64(n))
		}
		ops[fmt.Sprint("c", n)] = c
	}
	BoundIdem(ops)
	if len(ops) != IdemClients {
		t.Fatalf("%d clients kept", len(ops))
	}
	if _, ok := ops["c0"]; ok {
		t.Fatal("the least recent client was kept")
	}
	total := 0
	for _, c := range ops {
		total += len(c.Recent)
	}
	if total != IdemPerDocument {
		t.Fatalf("%d ops remembered, want %d", total, IdemPerDocument)
	}
	// The oldest versions went first: the most recent client lost nothing.
	if c := ops[fmt.Sprint("c", IdemClients+9)]; len(c.Recent) != opsPer || c.Floor != 0 {
		t.Fatalf("most recent client: %+v", c)
	}
}

// A document stored with the former per-client marks (the highest op id)
// loads: the mark's op is still a duplicate, every lower id is beyond the
// window, higher ids are new.
func TestLegacyMarksMigrate(t *testing.T) {
	var d Document
	if err := json.Unmarshal([]byte(`{"v":9,"state":{"data":{"n":9}},"clients":{"c":{"op":40,"v":7},"z":{"op":0,"v":1}},"hlc":"1700000000000.0.n"}`), &d); err != nil {
		t.Fatal(err)
	}
	c := d.Idem["c"]
	if r, ok := c.Find(40); !ok || r.Version != 7 {
		t.Fatalf("mark's op: %+v %v", r, ok)
	}
	if !c.Expired(39) || !c.Expired(1) || c.Expired(41) || c.Last != 1_700_000_000_000 {
		t.Fatalf("record %+v", c)
	}
	if len(d.Idem) != 1 || d.Version != 9 || d.Data()["n"] != 9.0 {
		t.Fatalf("document %+v", d)
	}
	b, _ := json.Marshal(&d)
	var again map[string]json.RawMessage
	_ = json.Unmarshal(b, &again)
	if _, ok := again["clients"]; ok {
		t.Fatalf("former marks written back: %s", b)
	}
}

func TestOpDigest(t *testing.T) {
	op := func(v string) Op {
		return Op{ClientID: "c", OpID: 1, Ops: []merge.FieldOp{{Op: merge.KindSet, Path: "a", Value: json.RawMessage(v)}}}
	}
	if OpDigest(op(`{"x":1,"y":[1,2]}`)) != OpDigest(op(` {"y":[1.0, 2], "x":1e0}`)) {
		t.Fatal("the same value spelled differently has another digest")
	}
	base := OpDigest(op(`1`))
	for name, o := range map[string]Op{
		"value": op(`2`), "string": op(`"1"`),
		"delete":  {ClientID: "c", OpID: 1, Delete: true},
		"replace": func() Op { o := op(`1`); o.Replace = true; return o }(),
		"base":    func() Op { o := op(`1`); o.Base = 3; return o }(),
		"ifmatch": func() Op { o := op(`1`); o.IfVersion = 3; return o }(),
		"kind":    {ClientID: "c", OpID: 1, Ops: []merge.FieldOp{{Op: merge.KindInc, Path: "a", Value: json.RawMessage(`1`)}}},
	} {
		if OpDigest(o) == base {
			t.Errorf("%s: same digest as the original op", name)
		}
	}
}

// BenchmarkIdemRecordEncode measures what a full idempotency record (the
// per-document bound, 30 writers) adds to each write's encoding.
func BenchmarkIdemRecordEncode(b *testing.B) {
	ops := map[string]*ClientOps{}
	v := int64(0)
	for n := range 30 {
		var c *ClientOps
		for id := range uint64(IdemPerDocument/30 + 1) {
			v++
			c = c.With(OpRecord{OpID: 1000 + id*2, Version: v, Digest: uint64(v) * 0x9e3779b97f4a7c15}, 1_700_000_000_000)
		}
		ops[fmt.Sprintf("%08x-0000-4000-8000-%012x", n, n)] = c
	}
	BoundIdem(ops)
	raw, _ := json.Marshal(ops)
	b.ResetTimer()
	for range b.N {
		out, err := json.Marshal(ops)
		if err != nil {
			b.Fatal(err)
		}
		var back map[string]*ClientOps
		if err := json.Unmarshal(out, &back); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(raw)), "record-bytes")
}
