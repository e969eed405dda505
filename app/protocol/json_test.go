package protocol

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/open-autoglm/autoglm/app/clock"
	"github.com/open-autoglm/autoglm/app/merge"
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
		b := mustEncodeJSON(t, c.m)
		if b != c.want {
			t.Errorf("encode:\n got %s\nwant %s", b, c.want)
		}
		back := mustDecodeJSON(t, b)
		if d := cmp.Diff(c.m, back); d != "" {
			t.Errorf("round trip of %s (-sent +decoded):\n%s", b, d)
		}
	}
	// A stamp without a node is only short for the author's.
	if _, err := Decode([]byte(`{"t":"op","doc":"forms/f1","op":1,"hlc":"1764096000000.3","ops":[]}`)); err == nil {
		t.Error("an op whose hlc has no node was accepted")
	}
}

// CompactFor leaves out, for one connection, what it can put back: the
// document behind the handle, the author behind a known number, and the
// node of a stamp that is the author's or the server's. Decoding and
// restoring those gives the original message back.
func TestCompactFor(t *testing.T) {
	delta := Message{T: TDelta, Doc: "forms/f1", V: 9, PV: 8, By: "c-w",
		HLC: clock.Timestamp{Wall: 1764096000000, Logical: 1, Node: "replica-0"},
		Ops: []merge.FieldOp{{Op: merge.KindSet, Path: "title", Value: []byte(`"Hi"`)}}}
	for _, c := range []struct {
		name   string
		m      Message
		h, a   uint64
		define bool
		want   string
	}{
		{"first time", delta, 3, 5, true, `{"t":"delta","v":9,"by":"c-w","h":3,"a":5,"hlc":"1764096000000.1.","set":{"title":"Hi"}}`},
		{"known author", delta, 3, 5, false, `{"t":"delta","v":9,"h":3,"a":5,"hlc":"1764096000000.1.","set":{"title":"Hi"}}`},
		{"no handle, too many authors", delta, 0, 0, false, `{"t":"delta","doc":"forms/f1","v":9,"by":"c-w","hlc":"1764096000000.1.","set":{"title":"Hi"}}`},
		{"ack of a client stamp", Message{T: TAck, Doc: "forms/f1", V: 9, PV: 8, Op: 4,
			HLC: clock.Timestamp{Wall: 1764096000000, Node: "c-me"}}, 3, 0, false, `{"t":"ack","v":9,"op":4,"h":3,"hlc":"1764096000000.0"}`},
		{"snap unchanged", Message{T: TSnap, Doc: "forms/f1", V: 9}, 3, 5, true, `{"t":"snap","doc":"forms/f1","v":9}`},
	} {
		got := CompactFor(c.m, c.h, c.a, c.define, "replica-0", "c-me")
		b := mustEncodeJSON(t, got)
		if b != c.want {
			t.Errorf("%s:\n got %s\nwant %s", c.name, b, c.want)
		}
		back := mustDecodeJSON(t, b)
		// What the receiving connection restores.
		if back.H == c.h && c.h != 0 {
			back.Doc, back.H = "forms/f1", 0
		}
		if back.A != 0 {
			back.By, back.A = "c-w", 0
		}
		if back.Here {
			back.HLC.Node, back.Here = "replica-0", false
		} else if back.HLC.Node == "" && back.T == TAck {
			back.HLC.Node = "c-me"
		} else if back.HLC.Node == "" {
			back.HLC.Node = back.By
		}
		back.Compact = c.m.T == TDelta || c.m.T == TAck
		want := c.m
		want.Compact = back.Compact
		if d := cmp.Diff(want, back); d != "" {
			t.Errorf("%s: restored (-sent +got):\n%s", c.name, d)
		}
	}
}

// Connections asking for the same compact forms of a shared delta share
// one variant and its encoding.
func TestSharedCompactVariants(t *testing.T) {
	sh := NewShared(Message{T: TDelta, Doc: "forms/f1", V: 2, By: "c-w"})
	a, b := sh.CompactFor(1, 4, false, "n"), sh.CompactFor(1, 4, false, "n")
	if a != b {
		t.Fatal("the same forms made two variants")
	}
	if c := sh.CompactFor(1, 4, true, "n"); c == a || c.Msg.By != "c-w" || a.Msg.By != "" {
		t.Fatalf("variants: %+v / %+v", a.Msg, c.Msg)
	}
}
