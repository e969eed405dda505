package session_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/open-autoglm/autoglm/app/auth"
	"github.com/open-autoglm/autoglm/app/collections/schemafile/schemafiletest"
	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/engine"
	"github.com/open-autoglm/autoglm/app/internal/stacktest"
	"github.com/open-autoglm/autoglm/app/internal/testutil"
	"github.com/open-autoglm/autoglm/app/merge"
	"github.com/open-autoglm/autoglm/app/protocol"
	"github.com/open-autoglm/autoglm/app/session"
)

// encoder is a client connection reduced to what costs CPU: every message
// is encoded as on a JSON WebSocket (a shared one once for all), then
// counted.
type encoder struct{ deltas *atomic.Int64 }

func (e encoder) Send(_ context.Context, m protocol.Message) error {
	_, err := protocol.Encode(m)
	return e.count(m, err)
}

func (e encoder) SendShared(_ context.Context, m *protocol.Shared) error {
	_, err := m.JSON()
	return e.count(m.Msg, err)
}

// queueEncoder is an encoder that also takes deltas from the fan-out
// (session.QueueSender), as the WebSocket transport does.
type queueEncoder struct{ encoder }

func (e queueEncoder) QueueShared(m *protocol.Shared) bool {
	return e.SendShared(context.Background(), m) == nil
}

func (queueEncoder) Pending() <-chan struct{} { return nil }
func (queueEncoder) Flush() error             { return nil }

func (e encoder) count(m protocol.Message, err error) error {
	if m.T == protocol.TDelta {
		e.deltas.Add(1)
	}
	return err
}

const fanoutRules = `
collections:
  peers:
    owner_field: owner
    read_rules: {owner: true, claims: {team: team}, roles: [admin]}
    fields:
      secret: {readable_by: [owner, admin]}
      budget: {readable_by: [lead, admin]}
`

// BenchmarkFanOut is the peers workload: one document, 100 watchers, a
// change fanned out to all of them. With rules, the watchers fall into three
// views (team members without secret and budget, leads without secret,
// admins with everything); without, the collection has no read rules.
// With inline, the transport takes deltas without blocking, so the fan-out
// delivers to idle sessions itself. Reported: CPU time of the process per
// delivery (cpu-ns/delivery) and wall time per delivery.
func BenchmarkFanOut(b *testing.B) {
	for _, inline := range []bool{false, true} {
		for _, rules := range []bool{false, true} {
			b.Run(fmt.Sprintf("inline=%v/rules=%v", inline, rules), func(b *testing.B) { benchFanOut(b, rules, inline) })
		}
	}
}

func benchFanOut(b *testing.B, rules, inline bool) {
	const watchers = 100
	file := fanoutRules
	if !rules {
		file = "collections:\n  peers: {}\n"
	}
	cfg := schemafiletest.MustParse(b, file)
	policy := auth.Policy{Collections: cfg, Enforce: true}
	st := stacktest.New(stacktest.Options{Engine: engine.Options{Collections: cfg, LogWindow: 100}, Lossy: true})
	h, eng := st.Hub, st.Eng
	k := core.Key{Collection: "peers", ID: "d1"}
	res, err := eng.Do(context.Background(), k, core.Op{ClientID: "w", OpID: 1, Ops: []merge.FieldOp{
		{Op: merge.KindSet, Path: "owner", Value: json.RawMessage(`"someone"`)},
		{Op: merge.KindSet, Path: "team", Value: json.RawMessage(`"red"`)},
		{Op: merge.KindSet, Path: "secret", Value: json.RawMessage(`"s"`)},
		{Op: merge.KindSet, Path: "budget", Value: json.RawMessage(`1`)},
	}})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var deltas atomic.Int64
	for i := range watchers {
		id := auth.Identity{Subject: fmt.Sprintf("u%d", i), Roles: []string{"user"}, Claims: map[string]string{"team": "red"}}
		switch {
		case i%5 == 0:
			id.Roles = []string{"admin"}
		case i%5 < 3:
			id.Roles = append(id.Roles, "lead")
		}
		var send session.Sender = encoder{&deltas}
		if inline {
			send = queueEncoder{encoder{&deltas}}
		}
		s := session.New(session.Options{ID: id.Subject, Policy: policy, Heartbeat: time.Hour, Queue: 4096,
			Authenticate: func(context.Context, string) (auth.Identity, error) { return id, nil }}, eng, h, send)
		go s.Run(ctx)
		s.Receive(ctx, protocol.Message{T: protocol.THello, Client: id.Subject, Token: "t"})
		s.Receive(ctx, protocol.Message{T: protocol.TSub, Doc: k.String()})
	}
	testutil.Eventually(b, time.Minute, "every session subscribed", func() bool { _, subs := h.Watched(); return subs == watchers })
	// Changes of a visible field and of hidden ones, as they come.
	change := func(v int64) core.Change {
		ops := []merge.FieldOp{{Op: merge.KindSet, Path: "name", Value: json.RawMessage(fmt.Sprintf(`"name %d"`, v))}}
		if v%2 == 0 {
			ops = append(ops, merge.FieldOp{Op: merge.KindSet, Path: "secret", Value: json.RawMessage(`"s2"`)},
				merge.FieldOp{Op: merge.KindInc, Path: "budget", Value: json.RawMessage(`1`)})
		}
		return core.Change{Doc: k.String(), Version: v, Prev: v - 1, Ops: ops, Author: "w", OpID: uint64(v), HLC: res.Change.HLC}
	}
	wait := func(n int64) {
		deadline := time.Now().Add(time.Minute)
		for deltas.Load() < n {
			if time.Now().After(deadline) {
				b.Fatalf("%d of %d deliveries", deltas.Load(), n)
			}
			time.Sleep(50 * time.Microsecond) // paces the publisher, finely: the wait is inside the timed loop
		}
	}
	start := cpuTime()
	b.ResetTimer()
	for i := range b.N {
		v := res.Version + int64(i) + 1
		h.Publish([]core.Change{change(v)})
		if i%1024 == 1023 {
			wait(int64(i+1) * watchers) // stay within the session queues
		}
	}
	wait(int64(b.N) * watchers)
	b.StopTimer()
	n := float64(b.N) * watchers
	b.ReportMetric(float64(cpuTime()-start)/n, "cpu-ns/delivery")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/n, "ns/delivery")
}

// cpuTime is the process's user and system CPU time so far, in ns.
func cpuTime() int64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}
