package session_test

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/internal/testutil"
	"github.com/open-autoglm/autoglm/app/protocol"
	"github.com/open-autoglm/autoglm/app/session"
)

// A full subscription (the full-push baseline) gets the whole document as a
// snap on every change instead of a delta, in version order, and catches up
// with a snapshot even when the op log could serve deltas.
func TestFullSubscriptionPushesSnapshots(t *testing.T) {
	var delivered atomic.Int64
	r := newRig(t, true, session.Options{Delivered: func(core.Change) { delivered.Add(1) }})
	hello(t, r, "c")
	r.write(t, 2)
	r.recv(t, protocol.Message{T: protocol.TSub, Doc: doc, Since: 1, Full: true})
	got := r.expect(t, protocol.TSnap, protocol.TSynced)
	if got[0].V != 2 || got[0].Data["n"] != 2.0 {
		t.Fatalf("catch-up snapshot %+v", got[0])
	}
	for want := int64(3); want <= 5; want++ {
		r.write(t, 1)
		m := r.next(t)
		if m.T != protocol.TSnap || m.V != want || m.Data["n"] != float64(want) {
			t.Fatalf("live change %d: %+v", want, m)
		}
	}
	// Versions the session already sent are not sent again.
	r.hub.Publish([]core.Change{r.lastChange(t)})
	r.write(t, 1)
	if m := r.next(t); m.V != 6 {
		t.Fatalf("after a duplicate got %+v, want version 6", m)
	}
	// The hook runs right after the write the test has just read.
	testutil.Eventually(t, 5*time.Second, "the Delivered hook saw 4 changes", func() bool { return delivered.Load() >= 4 })
	if n := delivered.Load(); n != 4 {
		t.Fatalf("Delivered hook saw %d changes, want the 4 live ones", n)
	}
}
