package inmem

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/open-autoglm/autoglm/app/daprsub"
	"github.com/open-autoglm/autoglm/app/internal/testutil"
	"github.com/open-autoglm/autoglm/app/kv"
)

// sink is a subscription handler that records the data of every delivery
// and answers what reply says (nil: SUCCESS).
type sink struct {
	mu    sync.Mutex
	got   []string
	reply func(data string, n int) string
}

func (k *sink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var ce struct {
		ID   string          `json:"id"`
		Type string          `json:"type"`
		Data json.RawMessage `json:"data"`
	}
	if err := json.NewDecoder(r.Body).Decode(&ce); err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	k.mu.Lock()
	k.got = append(k.got, string(ce.Data))
	n := 0
	for _, g := range k.got {
		if g == string(ce.Data) {
			n++
		}
	}
	reply := k.reply
	k.mu.Unlock()
	status := "SUCCESS"
	if reply != nil {
		status = reply(string(ce.Data), n)
	}
	_, _ = fmt.Fprintf(w, `{"status":%q}`, status)
}

func (k *sink) received() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]string(nil), k.got...)
}

func msg(topic, data string) kv.Message {
	return kv.Message{Pubsub: "tasks", Topic: topic, Body: []byte(data), ContentType: "application/json"}
}

// The subscribers of one topic share its messages as a consumer group:
// every message reaches exactly one of them.
func TestSubscribeConsumerGroup(t *testing.T) {
	s := NewState()
	a, b := &sink{}, &sink{}
	defer s.Subscribe([]daprsub.Subscription{{PubsubName: "tasks", Topic: "t", Route: "/t", Handler: a}})()
	defer s.Subscribe([]daprsub.Subscription{{PubsubName: "tasks", Topic: "t", Route: "/t", Handler: b}})()
	const n = 40
	for i := range n {
		if err := s.Publish(context.Background(), msg("t", fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	testutil.Eventually(t, 5*time.Second, "every message delivered", func() bool { return len(a.received())+len(b.received()) == n })
	seen := map[string]int{}
	for _, d := range append(a.received(), b.received()...) {
		seen[d]++
	}
	for i := range n {
		if seen[fmt.Sprint(i)] != 1 {
			t.Fatalf("message %d delivered %d times", i, seen[fmt.Sprint(i)])
		}
	}
	if len(a.received()) == 0 || len(b.received()) == 0 {
		t.Fatalf("one subscriber got everything: %d and %d", len(a.received()), len(b.received()))
	}
}

// A RETRY answer redelivers the message; when the retries are spent it
// goes to the dead-letter topic. A DROP answer sends it there at once.
func TestSubscribeRedeliveryAndDeadLetter(t *testing.T) {
	s := NewState()
	s.Redelivery = Redelivery{Retries: 3, Backoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond}
	work := &sink{reply: func(data string, n int) string {
		switch {
		case data == `"flaky"` && n < 3:
			return "RETRY"
		case data == `"broken"`:
			return "RETRY"
		case data == `"bad"`:
			return "DROP"
		}
		return "SUCCESS"
	}}
	dead := &sink{}
	defer s.Subscribe([]daprsub.Subscription{
		{PubsubName: "tasks", Topic: "work", Route: "/work", DeadLetterTopic: "dead", Handler: work},
		{PubsubName: "tasks", Topic: "dead", Route: "/dead", Handler: dead},
	})()
	for _, d := range []string{`"flaky"`, `"broken"`, `"bad"`} {
		if err := s.Publish(context.Background(), msg("work", d)); err != nil {
			t.Fatal(err)
		}
	}
	testutil.Eventually(t, 5*time.Second, "two dead letters", func() bool { return len(dead.received()) == 2 })
	count := map[string]int{}
	for _, d := range work.received() {
		count[d]++
	}
	if count[`"flaky"`] != 3 || count[`"broken"`] != 4 || count[`"bad"`] != 1 {
		t.Fatalf("deliveries %v: want flaky 3 (two retries), broken 4 (three retries), bad 1", count)
	}
	got := dead.received()
	if !(got[0] == `"bad"` && got[1] == `"broken"`) && !(got[0] == `"broken"` && got[1] == `"bad"`) {
		t.Fatalf("dead letters %v, want bad and broken", got)
	}
}

// stop waits for the deliveries in progress; a message whose redelivery
// is pending goes to another subscriber of the topic.
func TestSubscribeStopHandsOver(t *testing.T) {
	s := NewState()
	s.Redelivery = Redelivery{Retries: 5, Backoff: time.Hour, MaxBackoff: time.Hour}
	failed := make(chan struct{}, 1)
	a := &sink{reply: func(string, int) string { failed <- struct{}{}; return "RETRY" }}
	stopA := s.Subscribe([]daprsub.Subscription{{PubsubName: "tasks", Topic: "t", Route: "/t", Handler: a}})
	if err := s.Publish(context.Background(), msg("t", `"x"`)); err != nil {
		t.Fatal(err)
	}
	<-failed // a holds it, waiting an hour for the redelivery
	b := &sink{}
	defer s.Subscribe([]daprsub.Subscription{{PubsubName: "tasks", Topic: "t", Route: "/t", Handler: b}})()
	stopA()
	testutil.Eventually(t, 5*time.Second, "handed over to b", func() bool { return len(b.received()) == 1 })
	if len(a.received()) != 1 {
		t.Fatalf("a received %v", a.received())
	}
}
