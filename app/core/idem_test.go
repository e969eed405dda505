package core

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/open-autoglm/autoglm/app/merge"
)

// roundTrip encodes d as JSON and decodes it again.
func roundTrip(t *testing.T, d *Document) (back Document, encoded []byte) {
	t.Helper()
	b, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	return back, b
}

func TestClientOpsEncoding(t *testing.T) {
	var c *ClientOps
	for i, id := range []uint64{7, 3, 1 << 62, 12, 5} {
		c = c.With(OpRecord{OpID: id, Version: int64(100 - i*7), Digest: uint64(i) * 0x9e3779b97f4a7c15}, 1_700_000_000_000+int64(i))
	}
	c.Floor = 2
	doc := Document{Version: 100, Idem: map[string]*ClientOps{"alice": c, "bob": (*ClientOps)(nil).With(OpRecord{OpID: 1, Version: 1, Digest: 1}, 5)}}
	back, b := roundTrip(t, &doc)
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

// write records op 1 of client at the document's next version, at wall time
// v, and bounds the records as the engine does after a commit.
func write(d *Document, client string, op uint64) {
	d.Version++
	d.Remember(client, OpRecord{OpID: op, Version: d.Version, Digest: 1}, d.Version)
	BoundIdem(d)
}

// known reports what the document answers for op of client: remembered
// (dup, at the returned version), expired, or new.
func known(d *Document, client string, op uint64) (version int64, expired bool) {
	rec := d.IdemRecord(client)
	if r, ok := rec.Find(op); ok {
		return r.Version, false
	}
	return 0, rec.Expired(op) || rec == nil && d.BeyondHorizon(Op{ClientID: client, OpID: op, NoBase: true})
}

// Past IdemClients the least recent client moves to the gone list with its
// floor: its op 1 is beyond the window, never new again.
func TestBoundIdemClientsGone(t *testing.T) {
	var d Document
	write(&d, "a", 1)
	for i := range 300 {
		write(&d, fmt.Sprint("c", i), 1)
	}
	if len(d.Idem) != IdemClients || len(d.Gone) != 301-IdemClients || d.Horizon != 0 {
		t.Fatalf("%d records, %d gone, horizon %d", len(d.Idem), len(d.Gone), d.Horizon)
	}
	if v, expired := known(&d, "a", 1); v != 0 || !expired {
		t.Fatalf("a/1: version %d expired %v, want expired", v, expired)
	}
	if v, _ := known(&d, "c299", 1); v != 301 {
		t.Fatalf("c299/1 at %d", v)
	}
	// a comes back: a fresh record from its old floor, off the gone list.
	write(&d, "a", 2)
	if c := d.Idem["a"]; c == nil || c.Floor != 1 || d.Gone.find(ClientHash("a")) >= 0 {
		t.Fatalf("a's record %+v, gone %v", c, d.Gone)
	}
	back, _ := roundTrip(t, &d)
	if diff := cmp.Diff(d.Gone, back.Gone); diff != "" || back.Horizon != d.Horizon {
		t.Fatalf("gone round trip (-want +got):\n%s", diff)
	}
	for _, bad := range []string{`"!!"`, `"AQ"`, `"AQIDBAUGBwg"`, `7`} {
		var g GoneClients
		if err := json.Unmarshal([]byte(bad), &g); err == nil {
			t.Errorf("%s decoded as %+v", bad, g)
		}
	}
}

// Past IdemClients + IdemGone clients the oldest gone entries leave and the
// horizon rises to the version at that moment: an unknown client's op based
// below it is beyond the window, at or above it new.
func TestBoundIdemHorizon(t *testing.T) {
	var d Document
	write(&d, "a", 1)
	n := IdemClients + IdemGone + 10
	for i := range n {
		write(&d, fmt.Sprint("c", i), 1)
	}
	if len(d.Gone) != IdemGone || d.Horizon == 0 || d.Horizon > d.Version {
		t.Fatalf("%d gone, horizon %d at v%d", len(d.Gone), d.Horizon, d.Version)
	}
	if _, expired := known(&d, "a", 1); !expired {
		t.Fatal("a forgotten client's op 1 is new")
	}
	for _, c := range []struct {
		op   Op
		want bool
	}{
		{Op{NoBase: true}, true},
		{Op{Base: d.Horizon - 1}, true},
		{Op{NoBase: true, IfVersion: -1}, true},
		{Op{Base: d.Horizon}, false},
		{Op{NoBase: true, IfVersion: d.Version}, false},
	} {
		if got := d.BeyondHorizon(c.op); got != c.want {
			t.Errorf("BeyondHorizon(%+v) = %v at horizon %d", c.op, got, d.Horizon)
		}
	}
}

// The per-document bound takes from the client holding the most records: a
// client with 4 records keeps them while 30 others write 5,000 ops.
func TestBoundIdemFairShare(t *testing.T) {
	var d Document
	for op := uint64(1); op <= 4; op++ {
		write(&d, "s", op)
	}
	for i := range 5000 {
		write(&d, fmt.Sprint("w", i%30), uint64(i/30+1))
	}
	total := 0
	for _, c := range d.Idem {
		total += len(c.Recent)
	}
	if total != IdemPerDocument {
		t.Fatalf("%d ops remembered, want %d", total, IdemPerDocument)
	}
	for op := uint64(1); op <= 4; op++ {
		if v, _ := known(&d, "s", op); v != int64(op) {
			t.Fatalf("s/%d at %d, want %d", op, v, op)
		}
	}
	// The writers share the rest evenly.
	for id, c := range d.Idem {
		if id != "s" && (len(c.Recent) < (IdemPerDocument-4)/30 || len(c.Recent) > (IdemPerDocument-4)/30+1) {
			t.Fatalf("%s holds %d records", id, len(c.Recent))
		}
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
	BoundIdem(&Document{Idem: ops})
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
