package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/open-autoglm/autoglm/app/clock"
	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/engine"
	"github.com/open-autoglm/autoglm/app/inmem"
	"github.com/open-autoglm/autoglm/app/merge"
	"github.com/open-autoglm/autoglm/app/tasks"
)

type fixture struct {
	state *inmem.State
	pub   *Publisher
	k     core.Key
}

// newFixture commits n versions of orders/o1 through an engine on an
// in-memory store, and returns the task path over an in-memory state.
func newFixture(t *testing.T, n int) *fixture {
	t.Helper()
	store := inmem.NewStore()
	e := engine.New(engine.Options{Store: store, Clock: clock.New("n1", time.Now, time.Minute), LogWindow: 50, Retries: 5})
	k := core.Key{Collection: "orders", ID: "o1"}
	for i := range n {
		_, err := e.Do(context.Background(), k, core.Op{ClientID: "c", OpID: uint64(i + 1), Ops: []merge.FieldOp{
			{Op: merge.KindSet, Path: "n", Value: json.RawMessage(fmt.Sprint(i))}}})
		if err != nil {
			t.Fatal(err)
		}
	}
	st := inmem.NewState()
	q := tasks.New(tasks.Options{Publisher: st})
	p := New(Options{State: st, Pubsub: "events", Topic: "doc-events", Source: "test", Tasks: q,
		Changes: store.Changes})
	return &fixture{state: st, pub: p, k: k}
}

func (f *fixture) run(t *testing.T, upto int64) error {
	t.Helper()
	b, _ := json.Marshal(publishTask{Doc: f.k.String(), UpTo: upto})
	return f.pub.run(context.Background(), tasks.Task{ID: "t", Kind: KindPublish, Payload: b})
}

// mustRun runs the task for versions up to upto; an error fails the test.
func (f *fixture) mustRun(t *testing.T, upto int64) {
	t.Helper()
	if err := f.run(t, upto); err != nil {
		t.Fatal(err)
	}
}

// events returns the (prev, version) of every event published on the topic.
func (f *fixture) events(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, m := range f.state.Messages() {
		if m.Topic != "doc-events" {
			continue
		}
		var ce CloudEvent
		if err := json.Unmarshal(m.Body, &ce); err != nil {
			t.Fatal(err)
		}
		out = append(out, fmt.Sprintf("%d..%d", ce.Data.Prev+1, ce.Data.Version))
	}
	return out
}

func (f *fixture) cursor(t *testing.T) int64 {
	t.Helper()
	it, err := f.state.Get(context.Background(), cursorKey(f.k.String()))
	if err != nil {
		t.Fatal(err)
	}
	var c cursor
	_ = json.Unmarshal(it.Value, &c)
	return c.Published
}

// expect checks the events published (as from..to ranges) and the cursor.
func (f *fixture) expect(t *testing.T, events string, cursor int64) {
	t.Helper()
	if got := fmt.Sprint(f.events(t)); got != events || f.cursor(t) != cursor {
		t.Fatalf("events %s, cursor %d; want %s, %d", got, f.cursor(t), events, cursor)
	}
}

// The versions after the cursor go out as one event and the cursor moves;
// a repeated task publishes nothing.
func TestRunPublishesOnce(t *testing.T) {
	f := newFixture(t, 3)
	f.mustRun(t, 3)
	f.mustRun(t, 3)
	f.expect(t, "[1..3]", 3)
}

// A replica that loses the race for the cursor reads it again and goes on
// from where the winner left it.
func TestRunLostRace(t *testing.T) {
	f := newFixture(t, 3)
	slipped := false
	f.state.BeforePut = func(key string) {
		if !slipped {
			slipped = true
			if err := f.state.Set(context.Background(), key, []byte(`{"published":2}`), 0); err != nil {
				t.Error(err)
			}
		}
	}
	f.mustRun(t, 3)
	f.expect(t, "[1..3 3..3]", 3)
}

// An outage while moving the cursor fails the task (the queue retries it
// with backoff); it is not taken for a lost race and published again at
// once.
func TestRunOutage(t *testing.T) {
	f := newFixture(t, 3)
	f.state.FailPuts = 1
	if err := f.run(t, 3); !errors.Is(err, core.ErrUnavailable) {
		t.Fatalf("err = %v, want the outage", err)
	}
	f.expect(t, "[1..3]", 0)
}
