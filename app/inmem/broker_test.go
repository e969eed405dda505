package inmem

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/open-autoglm/autoglm/app/core"
)

// recorder collects what one broker member receives.
type recorder struct {
	mu       sync.Mutex
	changes  []core.Change
	presence []core.Presence
	got      chan struct{}
}

func newRecorder() *recorder { return &recorder{got: make(chan struct{}, 1000)} }

func (r *recorder) onChanges(cs []core.Change) {
	r.mu.Lock()
	r.changes = append(r.changes, cs...)
	r.mu.Unlock()
	r.got <- struct{}{}
}

func (r *recorder) onPresence(ps []core.Presence) {
	r.mu.Lock()
	r.presence = append(r.presence, ps...)
	r.mu.Unlock()
	r.got <- struct{}{}
}

func (r *recorder) wait(t *testing.T, n int) {
	t.Helper()
	for range n {
		select {
		case <-r.got:
		case <-time.After(5 * time.Second):
			t.Fatalf("delivery %d of %d did not arrive", n, n)
		}
	}
}

// Every member, the publisher's own replica included, receives every
// publish, in publish order; a member that left receives nothing more.
func TestBrokerFansOutInOrder(t *testing.T) {
	var b Broker
	a, c := newRecorder(), newRecorder()
	leaveA := b.Join(a.onChanges, a.onPresence)
	leaveC := b.Join(c.onChanges, nil)
	defer leaveC()
	ctx := context.Background()
	const n = 50
	for i := 1; i <= n; i++ {
		if err := b.Publish(ctx, []core.Change{{Doc: "forms/f", Version: int64(i), Prev: int64(i - 1)}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.PublishPresence(ctx, []core.Presence{{Doc: "forms/f", Client: "x", Node: "n1"}}); err != nil {
		t.Fatal(err)
	}
	a.wait(t, n+1)
	c.wait(t, n)
	for name, r := range map[string]*recorder{"a": a, "c": c} {
		r.mu.Lock()
		if len(r.changes) != n {
			t.Fatalf("%s received %d changes, want %d", name, len(r.changes), n)
		}
		for i, ch := range r.changes {
			if ch.Version != int64(i+1) {
				t.Fatalf("%s: change %d is %s: out of order", name, i, ch)
			}
		}
		r.mu.Unlock()
	}
	if fmt.Sprint(a.presence) != fmt.Sprint([]core.Presence{{Doc: "forms/f", Client: "x", Node: "n1"}}) {
		t.Fatalf("presence: %+v", a.presence)
	}
	leaveA()
	if err := b.Publish(ctx, []core.Change{{Doc: "forms/f", Version: n + 1, Prev: n}}); err != nil {
		t.Fatal(err)
	}
	c.wait(t, 1)
	select {
	case <-a.got:
		t.Fatal("a member that left still receives")
	default:
	}
}

// A receiver that publishes from inside its delivery (as the hub's presence
// refresh can) does not deadlock the broker.
func TestBrokerReentrantPublish(t *testing.T) {
	var b Broker
	done := make(chan struct{})
	var once sync.Once
	leave := b.Join(func(cs []core.Change) {
		if cs[0].Version == 1 {
			_ = b.Publish(context.Background(), []core.Change{{Doc: "forms/f", Version: 2, Prev: 1}})
			return
		}
		once.Do(func() { close(done) })
	}, nil)
	defer leave()
	_ = b.Publish(context.Background(), []core.Change{{Doc: "forms/f", Version: 1}})
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("publish from inside a delivery never arrived")
	}
}
