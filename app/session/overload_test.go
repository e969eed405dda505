package session_test

import (
	"testing"

	"github.com/open-autoglm/autoglm/app/config"
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
	// Overflows the queue by half its length again.
	overflowBurst(t, newRigWindow(t, true, session.Options{Queue: queue}, cfg.LogWindow), 1+queue+queue/2)
}
