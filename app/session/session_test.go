package session_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/open-autoglm/autoglm/app/auth"
	"github.com/open-autoglm/autoglm/app/clock"
	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/engine"
	"github.com/open-autoglm/autoglm/app/hub"
	"github.com/open-autoglm/autoglm/app/inmem"
	"github.com/open-autoglm/autoglm/app/internal/stacktest"
	"github.com/open-autoglm/autoglm/app/merge"
	"github.com/open-autoglm/autoglm/app/protocol"
	"github.com/open-autoglm/autoglm/app/session"
)

const doc = "forms/f1"

var key = core.Key{Collection: "forms", ID: "f1"}

// sender records what a session sends; gate, when set, holds every send
// until it is closed (a client that does not read), and held, when set, is
// signalled each time a send starts waiting at the gate.
type sender struct {
	out  chan protocol.Message
	gate atomic.Pointer[chan struct{}]
	held atomic.Pointer[chan struct{}]
}

func (s *sender) Send(ctx context.Context, m protocol.Message) error {
	if g := s.gate.Load(); g != nil {
		if h := s.held.Load(); h != nil {
			select {
			case *h <- struct{}{}:
			default:
			}
		}
		select {
		case <-*g:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	select {
	case s.out <- m:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

type rig struct {
	store *inmem.Store
	hub   *hub.Hub
	eng   *engine.Engine
	sess  *session.Session
	send  *sender
	ctx   context.Context
	done  chan session.Close
}

// newRig starts a session. When local is false, committed changes reach the
// hub only when the test publishes them (a lossy broadcast).
func newRig(t *testing.T, local bool, opt session.Options) *rig {
	t.Helper()
	return newRigWindow(t, local, opt, 50)
}

// newRigWindow is newRig with an op log of window versions per document.
func newRigWindow(t *testing.T, local bool, opt session.Options, window int) *rig {
	t.Helper()
	st := stacktest.New(stacktest.Options{Engine: engine.Options{LogWindow: window}, Lossy: !local})
	r := &rig{store: st.Store, hub: st.Hub, eng: st.Eng, send: &sender{out: make(chan protocol.Message, 10000)}}
	if opt.ID == "" {
		opt.ID = "s1"
	}
	r.sess = session.New(opt, r.eng, r.hub, r.send)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	r.ctx = ctx
	r.done = make(chan session.Close, 1)
	go func() { r.done <- r.sess.Run(ctx) }()
	return r
}

// closed waits up to 2s for the session to end with code; without an end
// the test fails with missing.
func (r *rig) closed(t *testing.T, code int, missing string) {
	t.Helper()
	select {
	case c := <-r.done:
		if c.Code != code {
			t.Fatalf("closed with %+v", c)
		}
	case <-time.After(2 * time.Second):
		t.Fatal(missing)
	}
}

func (r *rig) recv(t *testing.T, m protocol.Message) {
	t.Helper()
	if !r.sess.Receive(r.ctx, m) {
		t.Fatal("session ended")
	}
}

// next returns the next message that is not a heartbeat.
func (r *rig) next(t *testing.T) protocol.Message {
	t.Helper()
	for {
		select {
		case m := <-r.send.out:
			if m.T == protocol.TPing {
				continue
			}
			return m
		case <-time.After(3 * time.Second):
			t.Fatal("no message from the session")
		}
	}
}

func (r *rig) expect(t *testing.T, types ...string) []protocol.Message {
	t.Helper()
	var got []protocol.Message
	for range types {
		got = append(got, r.next(t))
	}
	var names []string
	for _, m := range got {
		names = append(names, fmt.Sprintf("%s@%d", m.T, m.V))
	}
	var want []string
	for i, tt := range types {
		want = append(want, fmt.Sprintf("%s@%d", tt, got[i].V))
	}
	if d := cmp.Diff(want, names); d != "" {
		t.Fatalf("messages (-want +got):\n%s", d)
	}
	return got
}

func (r *rig) write(t *testing.T, n int) []core.Change {
	t.Helper()
	var out []core.Change
	for range n {
		res, err := r.eng.Do(context.Background(), key, core.Op{Ops: []merge.FieldOp{{Op: merge.KindInc, Path: "n", Value: json.RawMessage("1")}}})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, *res.Change)
	}
	return out
}

func versions(ms []protocol.Message) []int64 {
	var v []int64
	for _, m := range ms {
		v = append(v, m.V)
	}
	return v
}

func hello(t *testing.T, r *rig, client string) {
	t.Helper()
	r.recv(t, protocol.Message{T: protocol.THello, Client: client, Proto: 1})
	if m := r.next(t); m.T != protocol.TWelcome || m.Client != client {
		t.Fatalf("welcome: %+v", m)
	}
}

func TestGapIsPulledFromLog(t *testing.T) {
	r := newRig(t, false, session.Options{})
	hello(t, r, "c")
	r.recv(t, protocol.Message{T: protocol.TSub, Doc: doc})
	r.expect(t, protocol.TSynced)
	cs := r.write(t, 5)
	// Only version 5 arrives; 1..4 were "lost" by the broadcast.
	r.hub.Publish(cs[4:])
	got := r.expect(t, "delta", "delta", "delta", "delta", "delta")
	if d := cmp.Diff([]int64{1, 2, 3, 4, 5}, versions(got)); d != "" {
		t.Fatal(d)
	}
	// Duplicates and stale versions are dropped.
	r.hub.Publish(cs)
	r.write(t, 1)
	r.hub.Publish(cs[4:])
	r.hub.Publish([]core.Change{r.lastChange(t)})
	if m := r.next(t); m.V != 6 {
		t.Fatalf("after duplicates got %+v, want version 6", m)
	}
}

func (r *rig) lastChange(t *testing.T) core.Change {
	t.Helper()
	s, _ := r.store.Load(context.Background(), key)
	cs, _ := r.store.Changes(context.Background(), key, s.Doc.Version, s.Doc.Version)
	return cs[0]
}

func TestAuthorGetsAckNotEcho(t *testing.T) {
	r := newRig(t, true, session.Options{})
	hello(t, r, "me")
	r.recv(t, protocol.Message{T: protocol.TSub, Doc: doc})
	r.expect(t, protocol.TSynced)
	for i := 1; i <= 20; i++ {
		r.recv(t, protocol.Message{T: protocol.TOp, Doc: doc, Op: uint64(i), Ops: []merge.FieldOp{{Op: merge.KindSet, Path: "a", Value: json.RawMessage(fmt.Sprint(i))}}})
	}
	got := r.expect(t, repeat("ack", 20)...)
	if d := cmp.Diff(dense(20), versions(got)); d != "" {
		t.Fatal(d)
	}
	for i, m := range got {
		if m.Op != uint64(i+1) || m.Ops != nil {
			t.Fatalf("ack %d: %+v", i, m)
		}
	}
	select {
	case m := <-r.send.out:
		if m.T != protocol.TPing {
			t.Fatalf("echo after acks: %+v", m)
		}
	case <-time.After(100 * time.Millisecond):
	}
}

func TestOthersChangesAreDeltas(t *testing.T) {
	r := newRig(t, true, session.Options{})
	hello(t, r, "me")
	r.write(t, 2)
	r.recv(t, protocol.Message{T: protocol.TSub, Doc: doc, Since: 1})
	r.expect(t, "delta", protocol.TSynced)
	r.write(t, 1)
	if m := r.next(t); m.T != protocol.TDelta || m.V != 3 || m.PV != 2 {
		t.Fatalf("%+v", m)
	}
}

func TestCatchUpBeyondLogIsSnapshot(t *testing.T) {
	r := newRig(t, false, session.Options{})
	hello(t, r, "c")
	r.write(t, 60) // log window is 50
	r.recv(t, protocol.Message{T: protocol.TSub, Doc: doc, Since: 3})
	got := r.expect(t, protocol.TSnap, protocol.TSynced)
	if got[0].V != 60 || got[0].Data["n"] != 60.0 {
		t.Fatalf("snapshot %+v", got[0])
	}
	r.recv(t, protocol.Message{T: protocol.TSub, Doc: doc, Since: 55})
	got = r.expect(t, "delta", "delta", "delta", "delta", "delta", protocol.TSynced)
	if d := cmp.Diff([]int64{56, 57, 58, 59, 60, 60}, versions(got)); d != "" {
		t.Fatal(d)
	}
}

// A burst larger than the session queue is not lost: the session drops the
// overflow and resyncs from the store.
func TestOverflowResyncs(t *testing.T) {
	// 40 changes overflow the queue of 16 and stay inside the log window.
	overflowBurst(t, newRig(t, true, session.Options{Queue: 16}), 40)
}

// overflowBurst subscribes a client, stops it reading while the session
// blocks sending the first of n changes, writes the rest, lets the client
// read again and expects every version as a delta, in order.
func overflowBurst(t *testing.T, r *rig, n int) {
	t.Helper()
	hello(t, r, "c")
	r.recv(t, protocol.Message{T: protocol.TSub, Doc: doc})
	r.expect(t, protocol.TSynced)
	gate, held := make(chan struct{}), make(chan struct{}, 1)
	r.send.held.Store(&held)
	r.send.gate.Store(&gate) // the client stops reading
	r.write(t, 1)            // the session blocks sending this one
	<-held
	r.write(t, n-1)
	close(gate)
	got := r.expect(t, repeat("delta", n)...)
	if d := cmp.Diff(dense(n), versions(got)); d != "" {
		t.Fatal(d)
	}
}

func TestSilentPeerTimesOut(t *testing.T) {
	r := newRig(t, false, session.Options{Heartbeat: 40 * time.Millisecond})
	r.closed(t, protocol.CloseHeartbeatTimeout, "silent peer not detected")
}

// TestSilentPeerClosedAfterTwoAndAHalfHeartbeats: a client that answers the
// first ping and then goes quiet is closed 2.5 heartbeats after the last
// thing it sent (docs/protocol.md), not at the next ping after that.
func TestSilentPeerClosedAfterTwoAndAHalfHeartbeats(t *testing.T) {
	const hb = 400 * time.Millisecond
	const tolerance = hb / 4
	r := newRig(t, false, session.Options{Heartbeat: hb})
	r.recv(t, protocol.Message{T: protocol.THello, Client: "c1"})
	r.expect(t, protocol.TWelcome)
	var ping protocol.Message
	for ping.T != protocol.TPing {
		select {
		case ping = <-r.send.out:
		case <-time.After(3 * hb):
			t.Fatal("no ping")
		}
	}
	last := time.Now()
	r.recv(t, protocol.Message{T: protocol.TPong, TS: ping.TS})
	select {
	case c := <-r.done:
		silent := time.Since(last)
		if c.Code != protocol.CloseHeartbeatTimeout {
			t.Fatalf("closed with %+v", c)
		}
		if silent < hb*5/2 || silent > hb*5/2+tolerance {
			t.Fatalf("closed after %v of silence, want 2.5 heartbeats (%v) + at most %v", silent, hb*5/2, tolerance)
		}
	case <-time.After(4 * hb):
		t.Fatal("silent peer not closed")
	}
}

// TestAdmitAtHello: the identity hello authenticated asks for a connection
// slot; a refusal closes the session with 4004 before the welcome, and a
// granted slot is given back when the session ends.
func TestAdmitAtHello(t *testing.T) {
	released := make(chan string, 2)
	admit := func(id auth.Identity) (func(), error) {
		if id.Subject == "full" {
			return nil, core.Errorf(core.CodeRateLimited, "more than 2 open connections for this identity")
		}
		return func() { released <- id.Subject }, nil
	}
	verify := func(_ context.Context, token string) (auth.Identity, error) {
		return auth.Identity{Subject: token}, nil
	}

	full := newRig(t, false, session.Options{Admit: admit, Authenticate: verify})
	full.recv(t, protocol.Message{T: protocol.THello, Token: "full"})
	select {
	case c := <-full.done:
		if c.Code != protocol.CloseRateLimited || c.Reason != "more than 2 open connections for this identity" {
			t.Fatalf("closed with %+v", c)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("a refused identity was not closed")
	}
	if len(full.send.out) != 0 {
		t.Fatalf("sent %+v before closing", <-full.send.out)
	}

	ok := newRig(t, false, session.Options{Admit: admit, Authenticate: verify, ID: "s2"})
	ok.recv(t, protocol.Message{T: protocol.THello, Token: "ann"})
	ok.expect(t, protocol.TWelcome)
	ok.sess.Fail(protocol.CloseProtocolError, "bye")
	<-ok.done
	select {
	case sub := <-released:
		if sub != "ann" {
			t.Fatalf("released %q", sub)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("the slot was not given back")
	}
}

func TestHelloFirst(t *testing.T) {
	r := newRig(t, false, session.Options{})
	r.recv(t, protocol.Message{T: protocol.TSub, Doc: doc})
	r.closed(t, protocol.CloseProtocolError, "sub before hello accepted")
}

func TestBadRequestsKeepSessionOpen(t *testing.T) {
	r := newRig(t, false, session.Options{MaxSubs: 1})
	hello(t, r, "c")
	r.recv(t, protocol.Message{T: protocol.TSub, Doc: "no-slash"})
	if m := r.next(t); m.T != protocol.TError || m.Code != core.CodeInvalidName {
		t.Fatalf("%+v", m)
	}
	r.recv(t, protocol.Message{T: protocol.TOp, Doc: doc})
	if m := r.next(t); m.T != protocol.TReject || m.Code != core.CodeBadRequest {
		t.Fatalf("op without id: %+v", m)
	}
	r.recv(t, protocol.Message{T: "teleport"})
	if m := r.next(t); m.T != protocol.TError || m.Code != core.CodeBadRequest {
		t.Fatalf("unknown type: %+v", m)
	}
	r.recv(t, protocol.Message{T: protocol.TSub, Doc: doc})
	r.expect(t, protocol.TSynced)
	r.recv(t, protocol.Message{T: protocol.TSub, Doc: "forms/other"})
	if m := r.next(t); m.Code != core.CodeTooLarge {
		t.Fatalf("subscription limit: %+v", m)
	}
	r.recv(t, protocol.Message{T: protocol.TPing, TS: 42})
	if m := r.next(t); m.T != protocol.TPong || m.TS != 42 {
		t.Fatalf("%+v", m)
	}
}

func TestPresence(t *testing.T) {
	st := stacktest.New(stacktest.Options{Engine: engine.Options{Clock: clock.New("n1", nil, 0)}, Lossy: true})
	h, eng := st.Hub, st.Eng
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	start := func(id string) (*session.Session, *sender, chan session.Close) {
		s := &sender{out: make(chan protocol.Message, 100)}
		sess := session.New(session.Options{ID: id}, eng, h, s)
		done := make(chan session.Close, 1)
		sctx, stop := context.WithCancel(ctx)
		go func() { done <- sess.Run(sctx) }()
		t.Cleanup(stop)
		sess.Receive(ctx, protocol.Message{T: protocol.THello, Client: id})
		sess.Receive(ctx, protocol.Message{T: protocol.TSub, Doc: doc})
		return sess, s, done
	}
	a, sa, _ := start("a")
	<-sa.out // welcome
	<-sa.out // synced
	a.Receive(ctx, protocol.Message{T: protocol.TPresence, Doc: doc, Data: map[string]any{"field": "title"}})
	b, sb, _ := start("b")
	_ = b
	<-sb.out
	<-sb.out
	m := <-sb.out
	if m.T != protocol.TPresence || m.Client != "a" || m.Data["field"] != "title" {
		t.Fatalf("b sees %+v", m)
	}
	a.Receive(ctx, protocol.Message{T: protocol.TUnsub, Doc: doc})
	m = <-sb.out
	if m.T != protocol.TPresence || m.Client != "a" || !m.Del {
		t.Fatalf("after a left, b sees %+v", m)
	}
}

func repeat(s string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = s
	}
	return out
}

func dense(n int) []int64 {
	out := make([]int64, n)
	for i := range out {
		out[i] = int64(i + 1)
	}
	return out
}

// A resend of an op still in flight is answered once; the same op id with
// other content is refused at once.
func TestResendWhileInFlight(t *testing.T) {
	r := newRig(t, true, session.Options{})
	entered, release := r.store.HoldNextCommit()
	hello(t, r, "c")
	op := func(v string) protocol.Message {
		return protocol.Message{T: protocol.TOp, Doc: doc, Op: 1, Ops: []merge.FieldOp{{Op: merge.KindSet, Path: "a", Value: json.RawMessage(v)}}}
	}
	r.recv(t, op("1"))
	<-entered
	r.recv(t, op(" 1.0"))
	r.recv(t, op("2"))
	if m := r.next(t); m.T != protocol.TReject || m.Code != core.CodeOpIDReused || m.Op != 1 {
		t.Fatalf("reused id in flight: %+v", m)
	}
	release()
	if m := r.next(t); m.T != protocol.TAck || m.V != 1 || m.Dup {
		t.Fatalf("first copy: %+v", m)
	}
	// The next answer is the next op's: no second answer for op 1.
	r.recv(t, protocol.Message{T: protocol.TOp, Doc: doc, Op: 2, Ops: []merge.FieldOp{{Op: merge.KindSet, Path: "b", Value: json.RawMessage("1")}}})
	if m := r.next(t); m.T != protocol.TAck || m.Op != 2 || m.V != 2 {
		t.Fatalf("after the first copy: %+v", m)
	}
}
