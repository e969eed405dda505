package inmem_test

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/open-autoglm/autoglm/app/clock"
	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/inmem"
	"github.com/open-autoglm/autoglm/app/merge"
)

type fanout struct{}

func (fanout) Done() {}

func sampleChange(v int64) core.Change {
	return core.Change{
		Doc: "forms/f", Version: v, Prev: v - 1, Author: "c1", OpID: 7,
		Ops:     []merge.FieldOp{{Op: merge.KindSet, Path: "a.b", Value: json.RawMessage(`{ "x" : [1, 2] }`)}},
		HLC:     clock.Timestamp{Wall: 1_700_000_000_000, Logical: 3, Node: "c1"},
		Deleted: true, Created: true, Pull: true, Fanout: fanout{},
	}
}

// sampleDocument sets every field of a document and of what it holds
// (TestSampleSetsEveryField), with data values of every JSON kind and some
// a decoder never produces.
func sampleDocument() *core.Document {
	ts := clock.Timestamp{Wall: 1_700_000_000_001, Logical: 2, Node: "n1"}
	return &core.Document{
		Key: core.Key{Collection: "forms", ID: "f"}, Version: 4, Deleted: true, Horizon: 2, LogStart: 3, Updated: ts,
		State: &merge.Doc{
			Data: map[string]any{
				"s": "text", "f": 1.5, "b": true, "null": nil, "obj": map[string]any{"in": []any{1.0, "x", map[string]any{}}},
				"list": []any{}, "int": 3, "number": json.Number("12"), "nilmap": map[string]any(nil),
			},
			Stamps:  map[string]merge.Stamp{"s": {HLC: ts, By: "other", V: 4}, "f": {HLC: ts, By: "n1", V: 3}},
			Elems:   map[string]map[string]map[string]int64{"tags": {`"a"`: {"c1": 2}, `"b"`: {}}},
			TextDel: map[string]int64{"s": 4},
		},
		Idem: map[string]*core.ClientOps{
			"c1": {Floor: 5, Recent: []core.OpRecord{{OpID: 6, Version: 3, Digest: 99}, {OpID: 9, Version: 4, Digest: 98}}, Last: 1_700_000_000_000},
			"c2": {Floor: 1, Last: 1},
		},
		Gone: core.GoneClients{{Hash: 12345, Floor: 8}},
		Tail: []core.Change{sampleChange(4)},
	}
}

// jsonRoundTrip is what a store that encodes documents gives back.
func jsonRoundTrip(t *testing.T, d *core.Document, k core.Key) *core.Document {
	t.Helper()
	b, err := core.EncodeDocument(d)
	if err != nil {
		t.Fatal(err)
	}
	out, err := core.DecodeDocument(b)
	if err != nil {
		t.Fatal(err)
	}
	out.Key = k
	return out
}

// setFields records, per struct type of this module reachable from v,
// which fields hold a non-zero value somewhere.
func setFields(v reflect.Value, seen map[reflect.Type]map[string]bool) {
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if !v.IsNil() {
			setFields(v.Elem(), seen)
		}
	case reflect.Struct:
		if !strings.HasPrefix(v.Type().PkgPath(), "github.com/open-autoglm/") {
			return
		}
		if seen[v.Type()] == nil {
			seen[v.Type()] = map[string]bool{}
		}
		for i := range v.NumField() {
			f := v.Type().Field(i)
			seen[v.Type()][f.Name] = seen[v.Type()][f.Name] || !v.Field(i).IsZero()
			setFields(v.Field(i), seen)
		}
	case reflect.Slice, reflect.Array:
		for i := range v.Len() {
			setFields(v.Index(i), seen)
		}
	case reflect.Map:
		for it := v.MapRange(); it.Next(); {
			setFields(it.Value(), seen)
		}
	}
}

// The sample document leaves no field unset, so a field added to a
// document later is covered by the copy tests, or fails here.
func TestSampleSetsEveryField(t *testing.T) {
	seen := map[reflect.Type]map[string]bool{}
	setFields(reflect.ValueOf(sampleDocument()), seen)
	for typ, fields := range seen {
		for name, set := range fields {
			if !set {
				t.Errorf("the sample document leaves %s.%s unset", typ, name)
			}
		}
	}
	if len(seen) < 8 {
		t.Fatalf("only %d types reached: %v", len(seen), seen)
	}
}

// Load gives back what an encode and decode of the committed document
// would, and Changes what an encode and decode of each change would.
func TestCopyIsJSONRoundTrip(t *testing.T) {
	ctx := context.Background()
	s := inmem.NewStore()
	k := core.Key{Collection: "forms", ID: "f"}
	d := sampleDocument()
	if err := s.Commit(ctx, core.Commit{Key: k, Doc: d, Archive: []core.Change{sampleChange(3)}}); err != nil {
		t.Fatal(err)
	}
	got, err := s.Load(ctx, k)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(jsonRoundTrip(t, d, k), got.Doc); diff != "" {
		t.Fatalf("loaded document (-encoded +stored):\n%s", diff)
	}
	if got.Doc.Data()["int"] != 3.0 || got.Doc.Tail[0].Fanout != nil || string(got.Doc.Tail[0].Ops[0].Value) != `{"x":[1,2]}` {
		t.Fatalf("not normalised as decoded JSON: %+v", got.Doc)
	}
	changes, err := s.Changes(ctx, k, 3, 4)
	if err != nil || len(changes) != 2 {
		t.Fatalf("changes 3..4: %+v %v", changes, err)
	}
	for i, ch := range []core.Change{sampleChange(3), sampleChange(4)} {
		b, _ := json.Marshal(ch)
		var want core.Change
		if err := json.Unmarshal(b, &want); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, changes[i]); diff != "" {
			t.Fatalf("change %d (-encoded +stored):\n%s", ch.Version, diff)
		}
	}
}

// poison overwrites every map, slice and pointed-to value reachable from v.
func poison(v reflect.Value) {
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if !v.IsNil() {
			poison(v.Elem())
		}
	case reflect.Struct:
		for i := range v.NumField() {
			if f := v.Field(i); f.CanSet() {
				poison(f)
				if f.Kind() != reflect.Map && f.Kind() != reflect.Slice && f.Kind() != reflect.Pointer && f.Kind() != reflect.Interface {
					f.SetZero()
				}
			}
		}
	case reflect.Slice:
		for i := range v.Len() {
			poison(v.Index(i))
			v.Index(i).SetZero()
		}
	case reflect.Map:
		if v.IsNil() {
			return
		}
		for it := v.MapRange(); it.Next(); {
			poison(it.Value())
		}
		v.SetMapIndex(reflect.ValueOf("poison").Convert(v.Type().Key()), reflect.Zero(v.Type().Elem()))
	}
}

// The store shares no memory with its callers: changing the committed
// document, a loaded one or a returned change afterwards changes nothing
// stored.
func TestStoreSharesNoMemory(t *testing.T) {
	ctx := context.Background()
	s := inmem.NewStore()
	k := core.Key{Collection: "forms", ID: "f"}
	d := sampleDocument()
	archive := []core.Change{sampleChange(3)}
	if err := s.Commit(ctx, core.Commit{Key: k, Doc: d, Archive: archive}); err != nil {
		t.Fatal(err)
	}
	want := jsonRoundTrip(t, sampleDocument(), k)
	poison(reflect.ValueOf(d))
	poison(reflect.ValueOf(archive))
	for range 2 {
		got, err := s.Load(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, got.Doc); diff != "" {
			t.Fatalf("stored document changed (-committed +stored):\n%s", diff)
		}
		poison(reflect.ValueOf(got.Doc))
		changes, err := s.Changes(ctx, k, 3, 4)
		if err != nil || len(changes) != 2 || changes[0].Ops[0].Path != "a.b" || changes[1].Ops[0].Path != "a.b" {
			t.Fatalf("stored changes changed: %+v %v", changes, err)
		}
		poison(reflect.ValueOf(changes))
	}
}

// A commit the encoding of a stored document would refuse fails, and
// stores nothing.
func TestCommitRefusesWhatEncodingRefuses(t *testing.T) {
	ctx := context.Background()
	k := core.Key{Collection: "forms", ID: "f"}
	bad := map[string]*core.Document{
		"infinity": {Version: 1, State: &merge.Doc{Data: map[string]any{"n": math.Inf(1)}}},
		"NaN":      {Version: 1, State: &merge.Doc{Data: map[string]any{"n": []any{math.NaN()}}}},
		"channel":  {Version: 1, State: &merge.Doc{Data: map[string]any{"n": make(chan int)}}},
		"raw":      {Version: 1, Tail: []core.Change{{Version: 1, Ops: []merge.FieldOp{{Op: merge.KindSet, Path: "a", Value: json.RawMessage(`{`)}}}}},
	}
	for name, d := range bad {
		if _, err := core.EncodeDocument(d); err == nil {
			t.Fatalf("%s: the encoding accepts it", name)
		}
		s := inmem.NewStore()
		if err := s.Commit(ctx, core.Commit{Key: k, Doc: d}); err == nil || errors.Is(err, core.ErrVersionConflict) {
			t.Errorf("%s: commit answered %v", name, err)
		}
		if got, _ := s.Load(ctx, k); got.Doc != nil {
			t.Errorf("%s: stored after a refused commit", name)
		}
	}
}
