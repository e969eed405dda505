package hub_test

import (
	"context"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/hub"
)

// sub keeps what it was offered, or refuses everything (a full queue).
type sub struct {
	full bool
	got  []core.Change
}

func (s *sub) Offer(c core.Change) bool {
	if s.full {
		return false
	}
	s.got = append(s.got, c)
	return true
}

func (s *sub) OfferPresence(core.Presence) bool { return true }

// One delivery span per change, however many sessions watch it: it ends
// when the last session that took the change has handled it, counting the
// sessions and the ones whose queue was full.
func TestDeliverySpanPerChange(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	h := hub.New(hub.Options{Tracer: sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec)).Tracer("test")})
	a, b, full := &sub{}, &sub{}, &sub{full: true}
	for _, s := range []*sub{a, b, full} {
		h.Subscribe("forms/f1", s)
	}
	h.Subscribe("forms/other", &sub{})
	h.Deliver(context.Background(), []core.Change{{Doc: "forms/f1", Version: 1}, {Doc: "forms/nobody", Version: 1}})
	if len(a.got) != 1 || len(b.got) != 1 || a.got[0].Fanout == nil {
		t.Fatalf("offers: a %v, b %v", a.got, b.got)
	}
	a.got[0].Fanout.Done()
	if n := len(rec.Ended()); n != 0 {
		t.Fatalf("%d spans ended while a session still has the change queued", n)
	}
	b.got[0].Fanout.Done()
	spans := rec.Ended()
	if len(spans) != 1 {
		t.Fatalf("%d spans, want 1 (none for a document nobody here watches)", len(spans))
	}
	want := map[string]string{"autoglm.sessions": "3", "autoglm.dropped": "1", "autoglm.doc": "forms/f1"}
	for _, kv := range spans[0].Attributes() {
		if w, ok := want[string(kv.Key)]; ok && kv.Value.String() != w {
			t.Errorf("%s = %s, want %s", kv.Key, kv.Value.String(), w)
		}
		delete(want, string(kv.Key))
	}
	if len(want) != 0 {
		t.Errorf("attributes missing: %v", want)
	}
}

// Untraced, changes carry no fan-out tracker.
func TestNoTrackerUntraced(t *testing.T) {
	h := hub.New(hub.Options{})
	s := &sub{}
	h.Subscribe("forms/f1", s)
	h.Publish([]core.Change{{Doc: "forms/f1", Version: 1}})
	if len(s.got) != 1 || s.got[0].Fanout != nil {
		t.Fatalf("offered %+v", s.got)
	}
}
