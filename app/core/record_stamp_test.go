package core

import (
	"encoding/json"
	"testing"

	"github.com/open-autoglm/autoglm/app/clock"
)

// The direct stamp encoder and parser agree with the general JSON path for
// plain and awkward strings alike.
func TestStampRecordFastPath(t *testing.T) {
	for _, s := range []StampRecord{
		{HLC: clock.Timestamp{Wall: 1764096000000, Logical: 3, Node: "c1"}, By: "c1", V: 7},
		{HLC: clock.Timestamp{Wall: 1764096000000, Node: "n1"}, By: "alice", V: 1},
		{HLC: clock.Timestamp{Wall: 5, Logical: 4294967295, Node: "x"}, By: "x", V: -1},
		{HLC: clock.Timestamp{Wall: 1, Node: "q\"uote"}, By: "q\"uote", V: 2},
		{HLC: clock.Timestamp{Wall: 1, Node: "n"}, By: "back\\slash", V: 3},
		{HLC: clock.Timestamp{Wall: 1, Node: "ü"}, By: "tab\there", V: 4},
	} {
		b, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		var want []any
		if s.By == s.HLC.Node {
			want = []any{s.HLC.String(), s.V}
		} else {
			want = []any{s.HLC.String(), s.V, s.By}
		}
		wb, _ := json.Marshal(want)
		if string(b) != string(wb) {
			t.Errorf("encoded %s, want %s", b, wb)
		}
		var got StampRecord
		if err := json.Unmarshal(b, &got); err != nil || got != s {
			t.Errorf("round trip of %s: %+v, %v; want %+v", b, got, err, s)
		}
	}
	for _, in := range []string{`[ "1.0.n", 2 ]`, `["1.0.n",2,"b"]`, `"1.0.n"`, `["1.0.\u006e",2]`} {
		var got StampRecord
		if err := got.UnmarshalJSON([]byte(in)); err != nil {
			t.Errorf("%s: %v", in, err)
		}
		if direct, ok := parseStamp([]byte(in)); ok && direct != got {
			t.Errorf("%s: direct parse %+v, decoder %+v", in, direct, got)
		}
	}
	for _, bad := range []string{`[]`, `["1.0.n"]`, `["1.0.n",x]`, `["1.0.n",2,"b","c"]`, `["nope",1]`} {
		var s StampRecord
		if err := s.UnmarshalJSON([]byte(bad)); err == nil {
			t.Errorf("%s: want an error", bad)
		}
	}
}

func BenchmarkStampRecordJSON(b *testing.B) {
	s := StampRecord{HLC: clock.Timestamp{Wall: 1764096000000, Logical: 3, Node: "c1"}, By: "c1", V: 7}
	for b.Loop() {
		buf, _ := s.MarshalJSON()
		var out StampRecord
		_ = out.UnmarshalJSON(buf)
	}
}
