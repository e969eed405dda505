package protocol

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/open-autoglm/autoglm/app/clock"
)

// The JSON encoding leaves out what a receiver derives — pv when it is v-1,
// the hlc's node when it is the author — and Decode restores both, so every
// message still round-trips; other pv values and other nodes are written.
func TestJSONLeavesOutDerivableFields(t *testing.T) {
	hlc := clock.Timestamp{Wall: 1764096000000, Logical: 3, Node: "c-4f9a2b"}
	for _, c := range []struct {
		m    Message
		want string
	}{
		{Message{T: TDelta, Doc: "forms/f1", V: 42, PV: 41, Op: 17, HLC: hlc, By: "c-4f9a2b"},
			`{"t":"delta","doc":"forms/f1","v":42,"op":17,"by":"c-4f9a2b","hlc":"1764096000000.3"}`},
		{Message{T: TDelta, Doc: "forms/f1", V: 42, PV: 40, HLC: hlc, By: "c-other"},
			`{"t":"delta","doc":"forms/f1","v":42,"by":"c-other","pv":40,"hlc":"1764096000000.3.c-4f9a2b"}`},
		{Message{T: TAck, Doc: "forms/f1", V: 5, Op: 4, Dup: true},
			`{"t":"ack","doc":"forms/f1","v":5,"op":4,"dup":true,"pv":0}`},
		{Message{T: TSnap, Doc: "forms/f1", V: 7}, `{"t":"snap","doc":"forms/f1","v":7}`},
	} {
		b, err := Encode(c.m)
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != c.want {
			t.Errorf("encode:\n got %s\nwant %s", b, c.want)
		}
		back, err := Decode(b)
		if err != nil {
			t.Fatal(err)
		}
		if d := cmp.Diff(c.m, back); d != "" {
			t.Errorf("round trip of %s (-sent +decoded):\n%s", b, d)
		}
	}
	// A stamp without a node is only short for the author's.
	if _, err := Decode([]byte(`{"t":"op","doc":"forms/f1","op":1,"hlc":"1764096000000.3","ops":[]}`)); err == nil {
		t.Error("an op whose hlc has no node was accepted")
	}
}
