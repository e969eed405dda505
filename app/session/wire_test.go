package session_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/open-autoglm/autoglm/app/clock"
	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/engine"
	"github.com/open-autoglm/autoglm/app/internal/stacktest"
	"github.com/open-autoglm/autoglm/app/merge"
	"github.com/open-autoglm/autoglm/app/protocol"
	"github.com/open-autoglm/autoglm/app/session"
)

// msgSharedSender is a sender that also takes shared messages, as the
// transports do; it records the message each one carries.
type msgSharedSender struct{ *sender }

func (s msgSharedSender) SendShared(ctx context.Context, m *protocol.Shared) error {
	return s.sender.Send(ctx, m.Msg)
}

// newSharedRig is newRig (local broadcast) with a SharedSender and the
// replica's node named n1, as its clock stamps.
func newSharedRig(t *testing.T) *rig {
	t.Helper()
	st := stacktest.New(stacktest.Options{Engine: engine.Options{LogWindow: 50}})
	r := &rig{store: st.Store, hub: st.Hub, eng: st.Eng, send: &sender{out: make(chan protocol.Message, 1000)}}
	r.sess = session.New(session.Options{ID: "s1", Node: "n1"}, r.eng, r.hub, msgSharedSender{r.send})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	r.ctx, r.done = ctx, make(chan session.Close, 1)
	go func() { r.done <- r.sess.Run(ctx) }()
	return r
}

func helloProto(t *testing.T, r *rig, client string, proto int) {
	t.Helper()
	r.recv(t, protocol.Message{T: protocol.THello, Client: client, Proto: proto})
	if m := r.next(t); m.T != protocol.TWelcome || m.Proto != proto {
		t.Fatalf("welcome: %+v", m)
	}
}

func writeAs(t *testing.T, r *rig, client string, op uint64, hlc clock.Timestamp) {
	t.Helper()
	_, err := r.eng.Do(context.Background(), key, core.Op{ClientID: client, OpID: op, HLC: hlc,
		Ops: []merge.FieldOp{{Op: merge.KindSet, Path: "title", Value: json.RawMessage(`"x"`)}}})
	if err != nil {
		t.Fatal(err)
	}
}

// A proto 2 connection gets deltas and acks in the compact forms: the
// handle of its sub for the document, the author's number (with the name
// the first time), stamps without a node it knows, and no op id of
// someone else's op.
func TestCompactFormsOnProto2(t *testing.T) {
	r := newSharedRig(t)
	helloProto(t, r, "me", 2)
	r.recv(t, protocol.Message{T: protocol.TSub, Doc: doc, H: 3})
	if m := r.next(t); m.T != protocol.TSynced || m.Doc != doc {
		t.Fatalf("synced keeps the document name: %+v", m)
	}
	writeAs(t, r, "w", 1, clock.Timestamp{})
	first := r.next(t)
	writeAs(t, r, "w", 2, clock.Timestamp{Wall: time.Now().UnixMilli(), Node: "w"})
	second := r.next(t)
	if first.T != protocol.TDelta || first.Doc != "" || first.H != 3 || first.A == 0 || first.By != "w" || first.Op != 0 ||
		!first.Here || first.HLC.Node != "" || !first.Compact {
		t.Fatalf("first delta: %+v", first)
	}
	if second.H != 3 || second.A != first.A || second.By != "" || second.Here || second.HLC.Node != "" {
		t.Fatalf("second delta: %+v", second)
	}
	r.recv(t, protocol.Message{T: protocol.TOp, Doc: doc, Op: 7, HLC: clock.Timestamp{Wall: time.Now().UnixMilli(), Node: "me"},
		Ops: []merge.FieldOp{{Op: merge.KindSet, Path: "title", Value: json.RawMessage(`"y"`)}}})
	if ack := r.next(t); ack.T != protocol.TAck || ack.H != 3 || ack.Doc != "" || ack.Op != 7 || ack.HLC.Node != "" || ack.Here {
		t.Fatalf("ack: %+v", ack)
	}
	// A handle is one document's at a time.
	r.recv(t, protocol.Message{T: protocol.TSub, Doc: "forms/f2", H: 3})
	if m := r.next(t); m.T != protocol.TError || m.Code != core.CodeBadRequest || m.Doc != "forms/f2" {
		t.Fatalf("a second document on handle 3: %+v", m)
	}
	// After unsub the handle is free, and the document is named again.
	r.recv(t, protocol.Message{T: protocol.TUnsub, Doc: doc})
	r.recv(t, protocol.Message{T: protocol.TSub, Doc: "forms/f2", H: 3})
	if m := r.next(t); m.T != protocol.TSynced {
		t.Fatalf("%+v", m)
	}
	r.recv(t, protocol.Message{T: protocol.TOp, Doc: doc, Op: 8, Ops: []merge.FieldOp{{Op: merge.KindSet, Path: "title", Value: json.RawMessage(`"z"`)}}})
	if ack := r.next(t); ack.T != protocol.TAck || ack.H != 0 || ack.Doc != doc {
		t.Fatalf("ack after unsub: %+v", ack)
	}
}

// A proto 1 connection gets every message as before: the document name,
// the author by name, full stamps; a handle in its sub is ignored.
func TestProto1Unchanged(t *testing.T) {
	r := newSharedRig(t)
	helloProto(t, r, "me", 1)
	r.recv(t, protocol.Message{T: protocol.TSub, Doc: doc, H: 3})
	r.expect(t, protocol.TSynced)
	writeAs(t, r, "w", 1, clock.Timestamp{})
	m := r.next(t)
	if m.T != protocol.TDelta || m.Doc != doc || m.H != 0 || m.A != 0 || m.By != "w" || m.HLC.Node != "n1" || m.Here || m.Compact || m.Op != 0 {
		t.Fatalf("delta: %+v", m)
	}
}

// A delta of the client's own op (written before it reconnected) names the
// op id so the client can settle it; others' deltas do not.
func TestOwnDeltaNamesItsOp(t *testing.T) {
	for _, proto := range []int{1, 2} {
		r := newSharedRig(t)
		writeAs(t, r, "x", 1, clock.Timestamp{})
		writeAs(t, r, "me", 9, clock.Timestamp{})
		writeAs(t, r, "w", 4, clock.Timestamp{})
		helloProto(t, r, "me", proto)
		r.recv(t, protocol.Message{T: protocol.TSub, Doc: doc, H: 1, Since: 1})
		got := r.expect(t, protocol.TDelta, protocol.TDelta, protocol.TSynced)
		if got[0].Op != 9 || got[0].By != "me" || got[1].Op != 0 {
			t.Fatalf("proto %d: own delta %+v, other's %+v", proto, got[0], got[1])
		}
	}
}
