package session_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/open-autoglm/autoglm/app/clock"
	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/engine"
	"github.com/open-autoglm/autoglm/app/hub"
	"github.com/open-autoglm/autoglm/app/inmem"
	"github.com/open-autoglm/autoglm/app/internal/testutil"
	"github.com/open-autoglm/autoglm/app/merge"
	"github.com/open-autoglm/autoglm/app/protocol"
	"github.com/open-autoglm/autoglm/app/session"
)

// queueSender is a transport that takes deltas from the fan-out without
// blocking, except that it refuses every third one (as a connection with a
// full buffer does), so both paths into the connection interleave.
type queueSender struct {
	mu      sync.Mutex
	out     []protocol.Message
	offers  int
	inline  atomic.Int64
	pending chan struct{}
	// refuse decides on the nth offer (from 1); nil: every third.
	refuse func(n int) bool
}

func newQueueSender() *queueSender { return &queueSender{pending: make(chan struct{})} }

func (q *queueSender) Send(_ context.Context, m protocol.Message) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.out = append(q.out, m)
	return nil
}

func (q *queueSender) SendShared(ctx context.Context, m *protocol.Shared) error {
	return q.Send(ctx, m.Msg)
}

func (q *queueSender) QueueShared(m *protocol.Shared) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.offers++
	if q.refuse != nil && q.refuse(q.offers) || q.refuse == nil && q.offers%3 == 0 {
		return false
	}
	q.out = append(q.out, m.Msg)
	q.inline.Add(1)
	return true
}

func (q *queueSender) Pending() <-chan struct{} { return q.pending }
func (q *queueSender) Flush() error             { return nil }

func (q *queueSender) messages() []protocol.Message {
	q.mu.Lock()
	defer q.mu.Unlock()
	return append([]protocol.Message(nil), q.out...)
}

var _ session.QueueSender = (*queueSender)(nil)

// Live changes delivered by the fan-out itself (to an idle session) and
// through the session's queue (when the transport refuses, or the session
// is busy) reach every watcher once each, in version order; the author
// gets an ack, never the delta, for its own ops; and a watcher that misses
// broadcasts repairs them from the log in order.
func TestInlineDeliveryKeepsOrderExactlyOnceAndAcks(t *testing.T) {
	store := inmem.NewStore()
	h := hub.New(hub.Options{Node: "n1"})
	const watchers, ops = 4, 300
	// A commit ending on a multiple of five versions is not broadcast (but
	// the last one is): the watchers pull those from the log when the next
	// one arrives.
	eng := engine.New(engine.Options{Store: store, Clock: clock.New("n1", nil, time.Minute), LogWindow: 1000,
		Local: func(cs []core.Change) {
			if last := cs[len(cs)-1].Version; last%5 != 0 || last == ops {
				h.Publish(cs)
			}
		}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sends := make([]*queueSender, watchers)
	sessions := make([]*session.Session, watchers)
	for i := range watchers {
		sends[i] = newQueueSender()
		sessions[i] = session.New(session.Options{ID: fmt.Sprintf("s%d", i), Heartbeat: time.Hour}, eng, h, sends[i])
		go sessions[i].Run(ctx)
		sessions[i].Receive(ctx, protocol.Message{T: protocol.THello, Client: fmt.Sprintf("c%d", i)})
		sessions[i].Receive(ctx, protocol.Message{T: protocol.TSub, Doc: doc})
	}
	testutil.Eventually(t, 20*time.Second, "every session subscribed", func() bool { _, subs := h.Watched(); return subs == watchers })
	count := func(q *queueSender, typ string) int {
		n := 0
		for _, m := range q.messages() {
			if m.T == typ {
				n++
			}
		}
		return n
	}
	// Session 0 writes; the others only watch. The first ops are paced, each
	// delivered before the next is sent, so the watchers are idle when most
	// of them come and the fan-out delivers those itself; the rest come as
	// fast as the engine commits them, so both paths interleave.
	const paced = 9
	for i := 1; i <= ops; i++ {
		v, _ := json.Marshal(i)
		if !sessions[0].Receive(ctx, protocol.Message{T: protocol.TOp, Doc: doc, Op: uint64(i),
			Ops: []merge.FieldOp{{Op: merge.KindSet, Path: fmt.Sprintf("f%d", i%7), Value: v}}}) {
			t.Fatal("session 0 ended")
		}
		if i <= paced && i%5 != 0 { // a multiple of five arrives with the next
			testutil.Eventually(t, 20*time.Second, fmt.Sprintf("version %d delivered", i), func() bool {
				for _, q := range sends[1:] {
					if count(q, protocol.TDelta) < i {
						return false
					}
				}
				return true
			})
		}
	}
	testutil.Eventually(t, 20*time.Second, "every ack and every delta delivered", func() bool {
		if count(sends[0], protocol.TAck) < ops {
			return false
		}
		for _, q := range sends[1:] {
			if count(q, protocol.TDelta) < ops {
				return false
			}
		}
		return true
	})
	for i, q := range sends {
		var v int64
		for _, m := range q.messages() {
			switch m.T {
			case protocol.TDelta:
				if i == 0 && m.By == "c0" {
					t.Fatalf("session 0 got its own op %d as a delta", m.Op)
				}
				if m.V != v+1 {
					t.Fatalf("session %d: delta v%d after v%d", i, m.V, v)
				}
				v = m.V
			case protocol.TAck:
				if m.V != v+1 {
					t.Fatalf("session %d: ack of v%d after v%d", i, m.V, v)
				}
				v = m.V
			}
		}
		if v != ops {
			t.Fatalf("session %d reached v%d of %d", i, v, ops)
		}
	}
	var inline int64
	for _, q := range sends[1:] {
		inline += q.inline.Load()
	}
	if inline == 0 {
		t.Fatal("no delta was delivered by the fan-out itself")
	}
}

// On a proto 2 connection an author's number is defined (sent with its
// name) by the first delta that reaches the client: when the transport
// refuses the fan-out's delta, the one that goes through the queue
// instead still carries the name.
func TestInlineRefusalKeepsTheAuthorDefinition(t *testing.T) {
	h := hub.New(hub.Options{Node: "n1"})
	eng := engine.New(engine.Options{Store: inmem.NewStore(), Clock: clock.New("n1", nil, time.Minute), LogWindow: 100,
		Local: h.Publish})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	q := newQueueSender()
	q.refuse = func(n int) bool { return n == 1 }
	s := session.New(session.Options{ID: "s1", Node: "n1", Heartbeat: time.Hour}, eng, h, q)
	go s.Run(ctx)
	s.Receive(ctx, protocol.Message{T: protocol.THello, Client: "me", Proto: 2})
	s.Receive(ctx, protocol.Message{T: protocol.TSub, Doc: doc, H: 3})
	testutil.Eventually(t, 20*time.Second, "the session subscribed", func() bool { _, subs := h.Watched(); return subs == 1 })
	var deltas []protocol.Message
	for op := uint64(1); op <= 2; op++ {
		if _, err := eng.Do(ctx, key, core.Op{ClientID: "w", OpID: op,
			Ops: []merge.FieldOp{{Op: merge.KindSet, Path: "title", Value: json.RawMessage(`"x"`)}}}); err != nil {
			t.Fatal(err)
		}
		// Each delta is delivered before the next commit: one that came
		// while the queue still held the first would rightly queue too.
		testutil.Eventually(t, 20*time.Second, fmt.Sprintf("delta %d delivered", op), func() bool {
			deltas = deltas[:0]
			for _, m := range q.messages() {
				if m.T == protocol.TDelta {
					deltas = append(deltas, m)
				}
			}
			return len(deltas) == int(op)
		})
	}
	if deltas[0].A == 0 || deltas[0].By != "w" {
		t.Fatalf("the first delta the client got does not define its author: %+v", deltas[0])
	}
	if deltas[1].A != deltas[0].A || deltas[1].By != "" {
		t.Fatalf("second delta: %+v", deltas[1])
	}
	if q.inline.Load() != 1 {
		t.Fatalf("%d deltas went inline, want the second only", q.inline.Load())
	}
}
