package hub_test

import (
	"testing"
	"time"

	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/hub"
)

// slowSub takes its time over each offer, as a session writing to its
// connection from the fan-out does.
type slowSub struct {
	offered chan struct{}
	release chan struct{}
}

func (s *slowSub) Offer(core.Change) bool {
	s.offered <- struct{}{}
	<-s.release
	return true
}

func (s *slowSub) OfferPresence(core.Presence) bool { return true }

// Offers are made outside the hub's lock: while one subscriber is busy
// with a change, others can subscribe, leave, and get presence, and other
// documents' changes are delivered.
func TestOffersDoNotHoldTheHub(t *testing.T) {
	h := hub.New(hub.Options{Node: "n1"})
	slow := &slowSub{offered: make(chan struct{}), release: make(chan struct{})}
	h.Subscribe("forms/a", slow)
	delivered := make(chan struct{})
	go func() {
		h.Publish([]core.Change{{Doc: "forms/a", Version: 1, Prev: 0}})
		close(delivered)
	}()
	<-slow.offered
	other := &sub{}
	done := make(chan struct{})
	go func() {
		h.Subscribe("forms/b", other)
		h.Publish([]core.Change{{Doc: "forms/b", Version: 1, Prev: 0}})
		h.Unsubscribe("forms/b", other)
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the hub was held while a subscriber handled an offer")
	}
	close(slow.release)
	<-delivered
	if len(other.got) != 1 {
		t.Fatalf("the other document's subscriber got %d changes", len(other.got))
	}
}
