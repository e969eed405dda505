package core

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/open-autoglm/autoglm/app/clock"
	"github.com/open-autoglm/autoglm/app/merge"
)

// recordView is a document as plain data, independent of any codec: the
// golden files' .view.json were written from it by the code that wrote the
// records, before Record existed.
func recordView(d *Document) map[string]any {
	out := map[string]any{"Version": d.Version, "Deleted": d.Deleted, "Horizon": d.Horizon, "Updated": d.Updated.String(), "LogStart": d.LogStart}
	if d.State != nil {
		st := map[string]any{"Data": d.State.Data, "Elems": d.State.Elems, "TextDel": d.State.TextDel}
		stamps := map[string]any{}
		for p, s := range d.State.Stamps {
			stamps[p] = []any{s.HLC.String(), s.By, s.V}
		}
		st["Stamps"] = stamps
		out["State"] = st
	}
	idem := map[string]any{}
	for c, r := range d.Idem {
		idem[c] = map[string]any{"Floor": r.Floor, "Last": r.Last, "Recent": r.Recent}
	}
	out["Idem"] = idem
	out["Gone"] = []GoneClient(d.Gone)
	out["Tail"] = d.Tail
	return out
}

// Records written before the format was versioned (testdata/record: a
// plain lww document, crdt sets and counters, a text field with
// tombstones, manual conflicts, idempotency records with gone clients and
// a horizon, a deleted document, and the older stamp and idempotency-mark
// forms) decode to what they decoded to then (.view.json), and encode
// again as they were, with the format version in front (.out.json where
// the older forms were rewritten then too).
func TestRecordGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/record/*.json")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, f := range files {
		base, ok := strings.CutSuffix(f, ".json")
		if !ok || strings.HasSuffix(base, ".view") || strings.HasSuffix(base, ".out") {
			continue
		}
		n++
		t.Run(filepath.Base(base), func(t *testing.T) {
			stored, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			stored = bytes.TrimSpace(stored)
			wantView, err := os.ReadFile(base + ".view.json")
			if err != nil {
				t.Fatal(err)
			}
			rewritten := stored
			if b, err := os.ReadFile(base + ".out.json"); err == nil {
				rewritten = bytes.TrimSpace(b)
			}

			d, err := DecodeDocument(stored)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := json.MarshalIndent(recordView(d), "", " ")
			if diff := cmp.Diff(strings.TrimSpace(string(wantView)), string(got)); diff != "" {
				t.Fatalf("decoded document (-want +got):\n%s", diff)
			}
			var viaJSON Document
			if err := json.Unmarshal(stored, &viaJSON); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(d, &viaJSON); diff != "" {
				t.Fatalf("json.Unmarshal differs from DecodeDocument (-want +got):\n%s", diff)
			}

			enc, err := EncodeDocument(d)
			if err != nil {
				t.Fatal(err)
			}
			want := `{"fmt":1,` + string(rewritten[1:])
			if string(enc) != want {
				t.Fatalf("encoded\n got %s\nwant %s", enc, want)
			}
			if viaJSON, _ := json.Marshal(d); !bytes.Equal(viaJSON, enc) {
				t.Fatalf("json.Marshal differs from EncodeDocument:\n%s\n%s", viaJSON, enc)
			}
			if reflected, _ := json.Marshal(RecordOf(d)); !bytes.Equal(reflected, enc) {
				t.Fatalf("encoding/json writes the record\n%s\nEncodeDocument\n%s", reflected, enc)
			}
			// The earlier encoding is the new one without the version.
			var old map[string]json.RawMessage
			if err := json.Unmarshal(rewritten, &old); err != nil {
				t.Fatal(err)
			}
			if got := StateSize(d.State); got != len(old["state"]) {
				t.Fatalf("StateSize = %d, the stored state is %d bytes", got, len(old["state"]))
			}
			again, err := DecodeDocument(enc)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(d, again); diff != "" {
				t.Fatalf("round trip (-want +got):\n%s", diff)
			}
		})
	}
	if n < 7 {
		t.Fatalf("%d golden records", n)
	}
}

// A record of a newer format is refused with storage_format, not read as
// far as its fields happen to match.
func TestRecordNewerFormat(t *testing.T) {
	for _, body := range []string{
		`{"fmt":2,"v":3,"state":{"data":{"a":1}},"hlc":"5.0.n"}`,
		`{"fmt":99,"v":3,"doc":{"a":1}}`,
		`{"fmt":2,"v":"3","state":["a"],"hlc":5}`,
		`{"fmt":-1,"v":3,"state":{"data":{}}}`,
	} {
		d, err := DecodeDocument([]byte(body))
		if !errors.Is(err, ErrRecordFormat) || d != nil {
			t.Fatalf("%s: %v, %v", body, d, err)
		}
		if c := CodeOf(fmt.Errorf("load x/y: %w", err)); c != CodeStorageFormat || !c.Retryable() {
			t.Fatalf("%s: code %s", body, c)
		}
		if m := PublicMessage(fmt.Errorf("load x/y: %w", err)); strings.Contains(m, "x/y") || !strings.Contains(m, "newer format") {
			t.Fatalf("%s: public message %q", body, m)
		}
		var viaJSON Document
		if err := json.Unmarshal([]byte(body), &viaJSON); !errors.Is(err, ErrRecordFormat) {
			t.Fatalf("json.Unmarshal(%s): %v", body, err)
		}
	}
	for _, body := range []string{`{"v":1,"state":{"data":{}}}`, `{"fmt":1,"v":1,"state":{"data":{}}}`, `{"fmt":0,"v":1}`} {
		if _, err := DecodeDocument([]byte(body)); err != nil {
			t.Fatalf("%s: %v", body, err)
		}
	}
}

// The stored form of a merge state, field by field.
func TestStateRecordJSON(t *testing.T) {
	s := merge.NewDoc()
	apply := func(in merge.Input, ops string) {
		t.Helper()
		var fo []merge.FieldOp
		if err := json.Unmarshal([]byte(ops), &fo); err != nil {
			t.Fatal(err)
		}
		in.Ops = fo
		if _, err := merge.Apply(merge.CRDT, s, in); err != nil {
			t.Fatal(err)
		}
	}
	apply(merge.Input{Client: "a", HLC: clock.Timestamp{Wall: 5, Logical: 2, Node: "a"}}, `[{"op":"set","path":"x.y","value":1},{"op":"add","path":"t","value":"q"}]`)
	apply(merge.Input{Client: "b", HLC: clock.Timestamp{Wall: 6, Node: "srv"}, Base: 1, Current: 1}, `[{"op":"set","path":"z","value":true}]`)
	b, err := json.Marshal(RecordOf(&Document{State: s}).State)
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"data":{"t":["q"],"x":{"y":1},"z":true},"stamps":{"x.y":["5.2.a",1],"z":["6.0.srv",2,"b"]},"elems":{"t":{"\"q\"":{"a":1}}}}`
	if string(b) != want {
		t.Fatalf("stored form\n got %s\nwant %s", b, want)
	}
	d, err := DecodeDocument([]byte(`{"state":` + want + `}`))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(s, d.State); diff != "" {
		t.Fatalf("round trip (-want +got):\n%s", diff)
	}
	d, err = DecodeDocument([]byte(`{"state":{"data":{},"stamps":{"a":"5.0.c"}}}`))
	if err != nil {
		t.Fatal(err)
	}
	if got := d.State.Stamps["a"]; got != (merge.Stamp{HLC: clock.Timestamp{Wall: 5, Node: "c"}, By: "c"}) {
		t.Fatalf("legacy stamp = %+v", got)
	}
	for _, bad := range []string{`{"stamps":{"a":[1]}}`, `{"stamps":{"a":["x",1]}}`, `{"stamps":{"a":"x"}}`, `{"stamps":{"a":["1.0.c","v"]}}`} {
		if _, err := DecodeDocument([]byte(`{"state":` + bad + `}`)); err == nil {
			t.Errorf("state %s accepted", bad)
		}
	}
}

// Stamps are written as encoding/json writes a map of their compact forms,
// whatever the paths and authors hold.
func TestStampsRecordJSON(t *testing.T) {
	ts := func(node string) clock.Timestamp {
		return clock.Timestamp{Wall: 1_764_000_000_000, Logical: 2, Node: node}
	}
	m := StampsRecord{
		"a":        {HLC: ts("n1"), By: "n1", V: 1},
		"b.c":      {HLC: ts("n1"), By: "alice", V: 2},
		"q\"uote":  {HLC: ts("n<1>"), By: "a&b", V: 3},
		"ü.\u2028": {HLC: ts("ü"), By: "tab\there", V: -4},
		"<tag>":    {HLC: ts("x"), By: "x", V: 5},
		"":         {HLC: ts("y"), By: "y\\", V: 6},
	}
	ref := map[string]StampRecord{}
	for p, s := range m {
		ref[p] = StampRecord(s)
	}
	want, err := json.Marshal(ref)
	if err != nil {
		t.Fatal(err)
	}
	got, err := m.MarshalJSON() // as written, before encoding/json checks it
	if err != nil || string(got) != string(want) {
		t.Fatalf("encoded %s, %v\nwant %s", got, err, want)
	}
	var back StampsRecord
	if err := json.Unmarshal(got, &back); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(m, back); diff != "" {
		t.Fatalf("round trip (-want +got):\n%s", diff)
	}
	if b, _ := json.Marshal(StampsRecord{}); string(b) != "{}" {
		t.Fatalf("empty: %s", b)
	}
	// Read as encoding/json reads a map of them, whitespace, escapes and
	// the bare-string form included.
	for _, in := range []string{
		string(got), `{}`, `null`, ` { "a" : [ "5.0.n" , 2 ] , "b\u002ec":"6.1.m",` + "\n\t" + `"[x]":["7.0.n",-3,"b,\"]:"] } `,
		`{"a":["5.0.n",1],"a":["6.0.n",2]}`,
	} {
		var want map[string]StampRecord
		if err := json.Unmarshal([]byte(in), &want); err != nil {
			t.Fatalf("%s: %v", in, err)
		}
		var got StampsRecord
		if err := json.Unmarshal([]byte(in), &got); err != nil {
			t.Fatalf("%s: %v", in, err)
		}
		if (want == nil) != (got == nil) || len(want) != len(got) {
			t.Fatalf("%s: got %v, want %v", in, got, want)
		}
		for p, s := range want {
			if got[p] != merge.Stamp(s) {
				t.Fatalf("%s: %q = %+v, want %+v", in, p, got[p], s)
			}
		}
	}
	for _, bad := range []string{`[]`, `{"a":[1]}`, `{"a":{"b":1}}`, `{"a":7}`, `"x"`} {
		var got StampsRecord
		if err := json.Unmarshal([]byte(bad), &got); err == nil {
			t.Errorf("%s decoded as %v", bad, got)
		}
	}
}

// sameAsReflected fails t unless EncodeDocument writes d's record as
// encoding/json writes the Record struct, and StateSize is the size of its
// state as encoding/json writes it.
func sameAsReflected(t testing.TB, d *Document) {
	t.Helper()
	r := RecordOf(d)
	want, werr := json.Marshal(r)
	got, gerr := EncodeDocument(d)
	if (werr != nil) != (gerr != nil) || !bytes.Equal(got, want) {
		t.Fatalf("EncodeDocument\n got %s (%v)\nwant %s (%v)", got, gerr, want, werr)
	}
	sized, size, serr := EncodeDocumentSized(d)
	if (serr != nil) != (gerr != nil) || !bytes.Equal(sized, got) {
		t.Fatalf("EncodeDocumentSized\n got %s (%v)\nwant %s (%v)", sized, serr, got, gerr)
	}
	if r == nil {
		return
	}
	state, err := json.Marshal(r.State)
	if err == nil && StateSize(d.State) != len(state) {
		t.Fatalf("StateSize = %d, encoding/json writes %d bytes", StateSize(d.State), len(state))
	}
	if err == nil && size != len(state) {
		t.Fatalf("EncodeDocumentSized: state size %d, encoding/json writes %d bytes", size, len(state))
	}
}

// The record is written as encoding/json writes the Record struct, every
// field set or left empty, values of every JSON kind and escape.
func TestRecordJSONIsEncodingJSON(t *testing.T) {
	sameAsReflected(t, nil)
	sameAsReflected(t, &Document{})
	sameAsReflected(t, &Document{State: &merge.Doc{}})
	sameAsReflected(t, benchRecord())
	ts := clock.Timestamp{Wall: 1_764_000_000_000, Logical: 3, Node: "n<1>"}
	full := &Document{
		Version: 9, Deleted: true, Horizon: 7, LogStart: 3, Updated: ts,
		State: &merge.Doc{
			Data: map[string]any{"s": "a\"b<&>\u2028\xff", "n": 1e21, "f": -0.000001, "z": 0.0, "b": false, "nil": nil,
				"arr": []any{1.5, "x", []any{}, map[string]any{"k": true}}, "obj": map[string]any{"ü": "v", "": 2.0}},
			Stamps:  map[string]merge.Stamp{"s": {HLC: ts, By: "alice\t", V: 2}, "n": {HLC: ts, By: ts.Node, V: 1}},
			Elems:   map[string]map[string]map[string]int64{"arr": {`"x"`: {"c": 1}}},
			TextDel: map[string]int64{"t": 4},
		},
		Idem: map[string]*ClientOps{"c1": {Floor: 2, Recent: []OpRecord{{OpID: 3, Version: 9, Digest: 77}}, Last: 5}},
		Gone: GoneClients{{Hash: ClientHash("gone"), Floor: 4}},
		Tail: []Change{{Doc: "c/d", Version: 9, Prev: 8, Ops: []merge.FieldOp{{Op: merge.KindSet, Path: "s", Value: json.RawMessage(`"v"`)}}, Author: "alice", OpID: 3, HLC: ts}},
	}
	sameAsReflected(t, full)
	r := RecordOf(full)
	r.Clients = map[string]legacyMark{"old": {OpID: 4, Version: 2}}
	want, _ := json.Marshal(r)
	if got, err := r.appendJSON(nil); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("with legacy marks\n got %s (%v)\nwant %s", got, err, want)
	}
}

// Any data a document can hold is stored as encoding/json writes it.
func FuzzRecordJSON(f *testing.F) {
	for _, s := range []string{`{"a":1}`, `{"a":{"b":[1,"<x>",null,true]},"c":"\u2028"}`, `{"e":1e-7,"f":1e21}`} {
		f.Add(s, "n1", "by")
	}
	f.Fuzz(func(t *testing.T, data, node, by string) {
		var m map[string]any
		if json.Unmarshal([]byte(data), &m) != nil {
			return
		}
		stamps := map[string]merge.Stamp{}
		for k := range m {
			stamps[k] = merge.Stamp{HLC: clock.Timestamp{Wall: 1, Node: node}, By: by, V: 1}
		}
		sameAsReflected(t, &Document{Version: 1, State: &merge.Doc{Data: m, Stamps: stamps}, Updated: clock.Timestamp{Wall: 2, Node: node}})
	})
}

// benchRecord is a document of 200 writes by 8 clients to 50 fields.
func benchRecord() *Document {
	d := &Document{State: merge.NewDoc(), Updated: clock.Timestamp{Wall: 1_764_000_000_000, Node: "n1"}}
	for i := range 200 {
		v, _ := json.Marshal(fmt.Sprintf("value %d", i))
		c := fmt.Sprintf("c%d", i%8)
		in := merge.Input{Client: c, HLC: clock.Timestamp{Wall: 1_764_000_000_000 + int64(i), Node: c}, Base: d.Version, Current: d.Version,
			Ops: []merge.FieldOp{{Op: merge.KindSet, Path: fmt.Sprintf("f%d.x", i%50), Value: v}}}
		if _, err := merge.Apply(merge.LWW, d.State, in); err != nil {
			panic(err)
		}
		d.Version++
		d.Remember(c, OpRecord{OpID: uint64(i + 1), Version: d.Version, Digest: uint64(i)*7919 + 1}, int64(i))
	}
	return d
}

// The write path encodes the document on every commit.
func BenchmarkRecordEncode(b *testing.B) {
	d := benchRecord()
	for b.Loop() {
		if _, err := EncodeDocument(d); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRecordDecode(b *testing.B) {
	body, _ := EncodeDocument(benchRecord())
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, err := DecodeDocument(body); err != nil {
			b.Fatal(err)
		}
	}
}

// The stamps reader agrees with encoding/json's reading of a map of stamps
// on every valid input, and survives any other.
func FuzzStampsRecord(f *testing.F) {
	for _, s := range []string{`{}`, `null`, `{"a":["5.0.n",2]}`, ` {"a\"b" : "5.0.n" ,"c":["6.1.m",-1,"x\\y"]}`, `{"a":[1]}`, `[]`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		var direct StampsRecord
		_ = direct.UnmarshalJSON([]byte(in)) // called on any text, it must not panic
		if !json.Valid([]byte(in)) {
			return
		}
		var want map[string]StampRecord
		werr := json.Unmarshal([]byte(in), &want)
		var got StampsRecord
		gerr := json.Unmarshal([]byte(in), &got)
		if (werr == nil) != (gerr == nil) {
			t.Fatalf("%s: encoding/json %v, StampsRecord %v", in, werr, gerr)
		}
		if werr != nil {
			return
		}
		if (want == nil) != (got == nil) || len(want) != len(got) {
			t.Fatalf("%s: got %v, want %v", in, got, want)
		}
		for p, s := range want {
			if got[p] != merge.Stamp(s) {
				t.Fatalf("%s: %q = %+v, want %+v", in, p, got[p], s)
			}
		}
	})
}

// sameChangesAsReflected fails t unless appendChanges writes cs as
// encoding/json writes the []Change, or both refuse it.
func sameChangesAsReflected(t testing.TB, cs []Change) {
	t.Helper()
	want, werr := json.Marshal(cs)
	got, gerr := appendChanges(nil, cs)
	if (werr != nil) != (gerr != nil) || (werr == nil && !bytes.Equal(got, want)) {
		t.Fatalf("appendChanges\n got %s (%v)\nwant %s (%v)", got, gerr, want, werr)
	}
}

// A tail is written as encoding/json writes it: every field set or left
// out, op values compacted and HTML-escaped, an invalid value refused.
func TestChangeJSONIsEncodingJSON(t *testing.T) {
	ts := clock.Timestamp{Wall: 1_764_000_000_000, Logical: 2, Node: "n<&>1"}
	raw := func(s string) json.RawMessage { return json.RawMessage(s) }
	sameChangesAsReflected(t, nil)
	sameChangesAsReflected(t, []Change{})
	sameChangesAsReflected(t, []Change{{}})
	sameChangesAsReflected(t, []Change{
		{Doc: "c/d", Version: 9, Prev: 8, HLC: ts},
		{Doc: "c/\"d\"", Version: -1, Ops: []merge.FieldOp{}, Author: "a\u2028b", OpID: 1<<64 - 1, HLC: ts, Deleted: true, Created: true, Pull: true},
		{Doc: "x", Ops: []merge.FieldOp{
			{Op: merge.KindSet, Path: "a.b", Value: raw(` { "k" : [1, 2 ,"<tag> & \u2028"] } `)},
			{Op: merge.KindUnset, Path: "<p>"},
			{Op: merge.KindSet, Path: "e", Value: raw(`""`)},
			{Op: merge.KindSet, Path: "n", Value: raw("null")},
		}},
	})
	sameChangesAsReflected(t, []Change{{Ops: []merge.FieldOp{{Op: merge.KindSet, Path: "bad", Value: raw(`{"a":`)}}}})
}

func FuzzChangeJSON(f *testing.F) {
	f.Add("c/d", "a.b", `{"x":[1,"<y>"]}`, "by", uint64(3))
	f.Add("", "", " 1 ", "", uint64(0))
	f.Fuzz(func(t *testing.T, doc, path, value, by string, op uint64) {
		sameChangesAsReflected(t, []Change{{Doc: doc, Version: int64(op), Prev: int64(op) - 1,
			Ops: []merge.FieldOp{{Op: merge.KindSet, Path: path, Value: json.RawMessage(value)}}, Author: by, OpID: op,
			HLC: clock.Timestamp{Wall: int64(op), Node: by}}})
	})
}
