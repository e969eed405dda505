package protocol

import (
	"encoding/json"
	"testing"

	"github.com/open-autoglm/autoglm/app/clock"
	"github.com/open-autoglm/autoglm/app/merge"
)

// benchMessages are the messages the binary codec's benchmarks encode and
// decode: what a fan-out sends most (a delta, plain and in the compact
// forms), an op with several kinds, a snapshot and a welcome.
func benchMessages() []struct {
	name string
	m    Message
} {
	hlc := clock.Timestamp{Wall: 1764096000000, Logical: 3, Node: "c-4f9a2b"}
	set := []merge.FieldOp{{Op: merge.KindSet, Path: "title", Value: json.RawMessage(`"Hello"`)}}
	delta := Message{T: TDelta, Doc: "forms/f1", V: 42, PV: 41, Op: 17, HLC: hlc, Ops: set, By: "c-4f9a2b"}
	return []struct {
		name string
		m    Message
	}{
		{"delta", delta},
		{"delta_compact", CompactFor(delta, 1, 7, false, "replica-0", "")},
		{"op", Message{T: TOp, Doc: "profiles/u1", Op: 300, Base: 2, HLC: hlc, Ops: []merge.FieldOp{
			{Op: merge.KindSet, Path: "address.city", Value: json.RawMessage(`{"name":"Oslo","zip":"0150"}`)},
			{Op: merge.KindUnset, Path: "nickname"},
			{Op: merge.KindInc, Path: "visits", Value: json.RawMessage(`-2.5`)},
			{Op: merge.KindIns, Path: "notes", Value: json.RawMessage(`["c-1",12,"c-4f9a2b@7","x"]`)},
		}}},
		{"snap", Message{T: TSnap, Doc: "profiles/u1", V: 12, Data: map[string]any{
			"address": map[string]any{"city": "Oslo"}, "age": 41.0, "name": "Åse", "tags": []any{"a", "b"}}}},
		{"welcome", Message{T: TWelcome, Client: "c-1", Session: "2f1c0d3e-8a7b-4c1d-9e2f-3a4b5c6d7e8f",
			Node: "replica-0", HB: 15000, Proto: Version}},
	}
}

func BenchmarkEncodeFrames(b *testing.B) {
	for _, c := range benchMessages() {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := EncodeFrames(c.m); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkDecodeFrames(b *testing.B) {
	for _, c := range benchMessages() {
		in, err := EncodeFrames(c.m)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := DecodeFrames(in, 0); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
