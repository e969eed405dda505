package webhooks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/open-autoglm/autoglm/app/clock"
	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/engine"
	"github.com/open-autoglm/autoglm/app/inmem"
	"github.com/open-autoglm/autoglm/app/merge"
	"github.com/open-autoglm/autoglm/app/tasks"
)

// An outage while saving a delivery cursor fails the delivery task (the
// queue retries it with backoff); it is not taken for a lost race, which
// would send the same version again at once. The next run delivers the
// rest in order.
func TestDeliverOutageNotRetriedAsRace(t *testing.T) {
	ctx := context.Background()
	store := inmem.NewStore()
	e := engine.New(engine.Options{Store: store, Clock: clock.New("n1", time.Now, time.Minute), LogWindow: 50, Retries: 5})
	k := core.Key{Collection: "orders", ID: "o1"}
	for i := range 2 {
		if _, err := e.Do(ctx, k, core.Op{ClientID: "c", OpID: uint64(i + 1), Ops: []merge.FieldOp{
			{Op: merge.KindSet, Path: "n", Value: json.RawMessage(fmt.Sprint(i))}}}); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	var got []int64
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var d Delivery
		_ = json.NewDecoder(r.Body).Decode(&d)
		mu.Lock()
		got = append(got, d.Version)
		mu.Unlock()
	}))
	defer rcv.Close()
	received := func() []int64 { mu.Lock(); defer mu.Unlock(); return slices.Clone(got) }

	state := inmem.NewState()
	guard, err := NewGuard(GuardOptions{Allow: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	s := New(Options{State: state, Tasks: tasks.New(tasks.Options{Publisher: state}), Changes: store.Changes, Targets: guard})
	ep, err := s.Register(ctx, Endpoint{Collection: "orders", URL: rcv.URL})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(deliverTask{Endpoint: ep.ID, Doc: k.String(), UpTo: 2})
	task := tasks.Task{ID: "t1", Kind: KindDeliver, Payload: b}

	state.FailPuts = 1 // the cursor write after the first delivery
	if err := s.runDeliver(ctx, task); !errors.Is(err, core.ErrUnavailable) {
		t.Fatalf("err = %v, want the outage", err)
	}
	if r := received(); !slices.Equal(r, []int64{1}) {
		t.Fatalf("endpoint received %v during the outage, want [1] once", r)
	}
	if err := s.runDeliver(ctx, task); err != nil {
		t.Fatal(err)
	}
	// Version 1 again (its cursor move was lost: at least once), then 2.
	if r := received(); !slices.Equal(r, []int64{1, 1, 2}) {
		t.Fatalf("endpoint received %v, want [1 1 2]", r)
	}
	var cur cursor
	if _, err := s.load(ctx, cursorKey(ep.ID, k.String()), &cur); err != nil || cur.Delivered != 2 {
		t.Fatalf("cursor %+v %v", cur, err)
	}
}
