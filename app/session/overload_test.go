package session_test

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/open-autoglm/autoglm/app/config"
	"github.com/open-autoglm/autoglm/app/protocol"
	"github.com/open-autoglm/autoglm/app/session"
)

// With the shipped settings, a subscriber that stalls on a hot document
// until its live queue overflows still receives every version as a delta:
// the queue is at most half the op-log window, so the replay from the log
// covers everything the overflow dropped (no snapshot in place of changes).
func TestOverflowWithShippedSettingsReplaysEveryChange(t *testing.T) {
	cfg := config.Default()
	queue := cfg.SessionQueueLen()
	if 2*queue > cfg.LogWindow {
		t.Fatalf("session queue %d is more than half the log window %d", queue, cfg.LogWindow)
	}
	r := newRigWindow(t, true, session.Options{Queue: queue}, cfg.LogWindow)
	hello(t, r, "c")
	r.recv(t, protocol.Message{T: protocol.TSub, Doc: doc})
	r.expect(t, protocol.TSynced)
	gate := make(chan struct{})
	r.send.gate.Store(&gate) // the client stops reading
	r.write(t, 1)            // the session blocks sending this one
	time.Sleep(20 * time.Millisecond)
	n := 1 + queue + queue/2 // overflows the queue by half its length again
	r.write(t, n-1)
	close(gate)
	got := r.expect(t, repeat("delta", n)...)
	if d := cmp.Diff(dense(n), versions(got)); d != "" {
		t.Fatal(d)
	}
}
