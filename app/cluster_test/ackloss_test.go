package cluster_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/open-autoglm/autoglm/app/client"
	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/internal/cluster"
	"github.com/open-autoglm/autoglm/app/internal/cluster/backend"
	"github.com/open-autoglm/autoglm/app/internal/testutil"
	"github.com/open-autoglm/autoglm/app/protocol"
)

// TestAckedOpsUnderFaults is the fault run: 3 replicas on the redis profile,
// 12 WebSocket writers and 4 REST writers on one hot document, each also
// writing a document of its own, with several ops of each writer in flight
// at once. Every refused op is sent again with its original op id, as
// docs/protocol.md tells clients to: WebSocket writers resend on a
// retryable reject and after every reconnect, REST writers retry a 5xx, a
// timeout or a refused connection on the next replica. Each phase adds one
// fault under load: none (the hot document's ETag races alone), dropped
// WebSocket connections, kill -9 of a daprd, kill -9 of an app, a daprd
// paused for 7s (its app's writes hang while clients time out and retry
// elsewhere), and Redis frozen for 7s, past the 5s store timeout: a relay in
// front of Redis stops forwarding, as a paused server would look, so the
// sidecars' calls time out while what they sent still reaches Redis later.
// A last phase brings 300 more clients to the hot document while 20 others
// retry ops whose answers they lost.
//
// Every op increments the counter n and the writer's own counter. At the
// end every acknowledged op must be in its document's log exactly once, at
// the version its ack named; n must count every logged op and each writer's
// counter its own; and a subscriber started on each replica must hold the
// stored documents. An op refused as older than the server's idempotency
// window (op_expired: it may or may not have been applied) is counted, and
// must not be in the log twice either. The test logs acknowledged, lost and
// applied-twice ops per phase. AUTOGLM_FAULT_OPS sets the acknowledged ops to reach across the
// phases (default 5000).
func TestAckedOpsUnderFaults(t *testing.T) {
	total := 5000
	if s := os.Getenv("AUTOGLM_FAULT_OPS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 100 {
			t.Fatalf("AUTOGLM_FAULT_OPS=%q: want a number of ops >= 100", s)
		}
		total = n
	}
	redis := cluster.NewProxy(t, backend.RedisAddr())
	c := cluster.Start(t, cluster.Options{Profile: "redis", RedisAddr: redis.Addr(),
		Env: []string{"AUTOGLM_ANTI_ENTROPY=1s", "AUTOGLM_LOG_WINDOW=1000000"}})
	coll := collection()
	hot := coll + "/hot"
	docs := []string{hot}
	led := &ledger{}
	led.setPhase(0)
	var wsw []*wsWriter
	var rw []*restWriter
	for i := range 12 {
		id := fmt.Sprintf("ws%d", i)
		docs = append(docs, coll+"/"+id)
		wsw = append(wsw, &wsWriter{id: id, urls: c.WSURLs(i % 3), docs: []string{hot, coll + "/" + id}, led: led,
			pending: map[uint64]*wsPending{}, wake: make(chan struct{}, 1)})
	}
	for i := range 4 {
		id := fmt.Sprintf("rest%d", i)
		docs = append(docs, coll+"/"+id)
		var urls []string
		for k := range c.Nodes {
			urls = append(urls, c.Nodes[(i+k)%len(c.Nodes)].URL())
		}
		rw = append(rw, &restWriter{id: id, urls: urls, docs: []string{hot, coll + "/" + id}, led: led})
	}
	create(t, c.Nodes[0].URL(), docs)
	// One subscriber starts on each replica (and moves on when its replica
	// goes away).
	var subs []map[string]*client.Doc
	for i := range c.Nodes {
		urls := c.WSURLs(i)
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		s, err := client.Dial(ctx, urls[0], client.Options{ClientID: fmt.Sprintf("sub%d", i), URLs: urls[1:],
			MinBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond})
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		copies := map[string]*client.Doc{}
		for _, d := range docs {
			if copies[d], err = s.Subscribe(ctx, d, 0); err != nil {
				cancel()
				t.Fatalf("subscriber %d: %s: %v", i, d, err)
			}
		}
		cancel()
		subs = append(subs, copies)
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, w := range wsw {
		wg.Add(1)
		go func() { defer wg.Done(); w.run(stop) }()
	}
	for _, w := range rw {
		for k := range 2 {
			wg.Add(1)
			go func() { defer wg.Done(); w.run(stop, k) }()
		}
	}
	stopped := false
	finish := func() {
		if !stopped {
			stopped = true
			close(stop)
			wg.Wait()
		}
	}
	defer finish()

	// crash kills a process (SIGKILL), leaves it down for down, and starts
	// it again.
	crash := func(kill func(), down time.Duration, start func() error) func() {
		return func() {
			kill()
			time.Sleep(down) // the outage under test lasts down
			if err := start(); err != nil {
				t.Error(err)
			}
		}
	}
	phases := []struct {
		name  string
		fault func()
	}{
		{"hot document, no fault", nil},
		{"WebSocket connections dropped", func() {
			for range 3 {
				for _, w := range wsw {
					w.drop()
				}
				time.Sleep(300 * time.Millisecond) // spreads the drops over the load
			}
		}},
		{"kill -9 of replica 1's daprd, down 3s", crash(c.Nodes[1].KillSidecar, 3*time.Second, c.Nodes[1].StartSidecar)},
		{"kill -9 of replica 0's app, down 2s", crash(c.Nodes[0].KillApp, 2*time.Second, c.Nodes[0].StartApp)},
		{"replica 2's daprd paused 7s (SIGSTOP)", func() {
			resume, err := pause(c.Nodes[2].SidecarPid(), 20*time.Second)
			if err != nil {
				t.Error(err)
				return
			}
			time.Sleep(7 * time.Second) // the pause under test
			if err := resume(); err != nil {
				t.Error(err)
			}
		}},
		{"Redis frozen 7s (store timeout 5s)", func() {
			redis.Pause()
			time.Sleep(7 * time.Second) // the freeze under test, past the store timeout
			redis.Resume()
		}},
		{"300 more clients on the hot document, 20 answers lost and retried", func() {
			crowd(rw[0].urls, led, hot, 20, 300)
		}},
	}
	per := (total + len(phases) - 1) / len(phases)
	// A phase that stalls or fails ends the run; what was written is still
	// checked and counted.
	for i, p := range phases {
		led.setPhase(i)
		start := time.Now()
		recovered := ""
		if p.fault != nil {
			if err := led.waitAcked(i, per/3, 2*time.Minute); err != nil {
				t.Errorf("%s: %v", p.name, err)
				break
			}
			before := led.acked(i)
			p.fault()
			if t.Failed() {
				break
			}
			during, after := led.acked(i)-before, time.Now()
			if err := led.waitAcked(i, led.acked(i)+100, 2*time.Minute); err != nil {
				t.Errorf("%s: %v", p.name, err)
				break
			}
			recovered = fmt.Sprintf(" (%d during the fault; the next 100 within %v after it)", during, time.Since(after).Round(time.Millisecond))
		}
		if err := led.waitAcked(i, per, 2*time.Minute); err != nil {
			t.Errorf("%s: %v", p.name, err)
			break
		}
		t.Logf("phase %d (%s): %d ops acknowledged in %v%s", i, p.name, led.acked(i), time.Since(start).Round(time.Millisecond), recovered)
	}
	finish()
	for _, n := range c.Nodes {
		if err := n.WaitReady(30 * time.Second); err != nil {
			t.Fatal(err)
		}
	}

	// Stored state and logs.
	base := c.Nodes[2].URL()
	final := map[string]int64{}
	data := map[string]map[string]any{}
	logs := map[string]map[string][]int64{}
	for _, d := range docs {
		final[d], data[d] = stored(t, base, d)
		logs[d] = logged(t, base, d, final[d])
	}

	r := led.check(logs)
	for i := range r.acked {
		t.Logf("phase %d (%s): acknowledged %d (%d answered as duplicates), lost %d (%d sent once, %d resent; %d REST, %d WebSocket), applied twice %d, acked at another version %d; resent after a reject %d, after a reconnect or a failed request %d; refused as beyond the retry window %d",
			i, phases[i].name, r.acked[i], r.dups[i], r.lost[i], r.lostOnce[i], r.lostResent[i], r.lostREST[i], r.lost[i]-r.lostREST[i],
			r.twice[i], r.moved[i], r.resentReject[i], r.resentConn[i], r.expired[i])
	}
	t.Logf("all phases: acknowledged %d, lost %d, applied twice %d, acked at another version %d, refused as beyond the retry window %d; hot document at v%d",
		sum(r.acked), sum(r.lost), sum(r.twice), sum(r.moved), sum(r.expired), final[hot])
	for _, e := range r.expiredOps[:min(len(r.expiredOps), 10)] {
		t.Log(e)
	}
	for _, e := range r.errs[:min(len(r.errs), 40)] {
		t.Error(e)
	}
	if len(r.errs) > 40 {
		t.Errorf("... and %d more", len(r.errs)-40)
	}

	// Counters: n counts every logged op once, each writer's counter its
	// own ops.
	for _, d := range docs {
		if got, want := data[d]["n"], float64(final[d]-1); got != want {
			t.Errorf("%s: n = %v, %v ops logged", d, got, want)
		}
		per := map[string]float64{}
		for key, vs := range logs[d] {
			by, _, _ := strings.Cut(key, "/")
			per[by] += float64(len(vs))
		}
		counters, _ := data[d]["per"].(map[string]any)
		if len(counters) != len(per) {
			t.Errorf("%s: counters %v, logged ops by writer %v", d, counters, per)
		}
		for by, n := range per {
			if counters[by] != n {
				t.Errorf("%s: counter of %s = %v, %v of its ops logged", d, by, counters[by], n)
			}
		}
	}

	// Every subscriber converges on every document.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i, copies := range subs {
		for _, d := range docs {
			cd := copies[d]
			if err := cd.WaitVersion(ctx, final[d]); err != nil {
				t.Errorf("subscriber %d did not converge: %v", i, err)
				continue
			}
			if got, want := checksum(cd.Data()), checksum(data[d]); got != want || cd.Version() != final[d] {
				t.Errorf("subscriber %d: %s at v%d %s, the store v%d %s", i, d, cd.Version(), got, final[d], want)
			}
		}
	}
}

func sum(xs []int) int {
	n := 0
	for _, x := range xs {
		n += x
	}
	return n
}

// incOps is what every writer's op does: count itself in n and in the
// writer's own counter.
func incOps(writer string) []client.FieldOp {
	return []client.FieldOp{client.Inc("n", 1), client.Inc("per."+writer, 1)}
}

// opRec is one op a writer issued, and what became of it.
type opRec struct {
	client, doc string
	op          uint64
	phase       int
	acked       bool
	version     int64
	dup         bool
	// expired: refused as older than the server's idempotency window; it
	// may or may not have been applied (but never twice).
	expired bool
	// issued is when the op was first sent; answered when it was acked or
	// refused for good.
	issued, answered time.Time
	// Sends again with the same op id: after a retryable reject (or a 5xx),
	// and after a lost connection (or a failed request).
	resentReject, resentConn int
}

// ledger records every op of the run.
type ledger struct {
	mu     sync.Mutex
	phase  int
	ops    []*opRec
	ackedN []int // acknowledged ops per phase they were issued in
	fails  []string
}

func (l *ledger) setPhase(i int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.phase = i
	for len(l.ackedN) <= i {
		l.ackedN = append(l.ackedN, 0)
	}
}

func (l *ledger) issue(client, doc string, op uint64) *opRec {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := &opRec{client: client, doc: doc, op: op, phase: l.phase, issued: time.Now()}
	l.ops = append(l.ops, r)
	return r
}

func (l *ledger) ack(r *opRec, v int64, dup bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if r.acked {
		return
	}
	r.acked, r.version, r.dup, r.answered = true, v, dup, time.Now()
	l.ackedN[r.phase]++
}

func (l *ledger) expire(r *opRec) {
	l.mu.Lock()
	defer l.mu.Unlock()
	r.expired, r.answered = true, time.Now()
}

func (l *ledger) resent(r *opRec, reject bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if reject {
		r.resentReject++
	} else {
		r.resentConn++
	}
}

func (l *ledger) fail(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.fails = append(l.fails, fmt.Sprintf(format, args...))
}

func (l *ledger) failed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.fails) > 0
}

func (l *ledger) acked(phase int) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ackedN[phase]
}

// waitAcked waits until n ops issued in phase are acknowledged, and fails
// on a writer failure.
func (l *ledger) waitAcked(phase, n int, timeout time.Duration) error {
	var got int
	var fails []string
	testutil.Within(timeout, func() bool {
		l.mu.Lock()
		got, fails = l.ackedN[phase], slices.Clone(l.fails)
		l.mu.Unlock()
		return len(fails) > 0 || got >= n
	})
	switch {
	case len(fails) > 0:
		return fmt.Errorf("%d writer failures: %v", len(fails), fails[:min(len(fails), 10)])
	case got < n:
		return fmt.Errorf("%d of %d ops acknowledged within %v", got, n, timeout)
	}
	return nil
}

type report struct {
	acked, dups, lost, twice, moved, resentReject, resentConn, expired []int
	expiredOps                                                         []string
	// Lost ops by how they were sent: once or again with the same op id,
	// over REST or WebSocket.
	lostOnce, lostResent, lostREST []int
	errs                           []string
}

// check compares the ledger with the documents' logs ("client/op" →
// versions).
func (l *ledger) check(logs map[string]map[string][]int64) report {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := len(l.ackedN)
	r := report{acked: make([]int, n), dups: make([]int, n), lost: make([]int, n), twice: make([]int, n),
		moved: make([]int, n), resentReject: make([]int, n), resentConn: make([]int, n), expired: make([]int, n),
		lostOnce: make([]int, n), lostResent: make([]int, n), lostREST: make([]int, n)}
	r.errs = append(r.errs, l.fails...)
	issued := map[string]bool{}
	for _, o := range l.ops {
		key := fmt.Sprintf("%s/%d", o.client, o.op)
		issued[o.doc+" "+key] = true
		vs := logs[o.doc][key]
		r.resentReject[o.phase] += o.resentReject
		r.resentConn[o.phase] += o.resentConn
		if len(vs) > 1 {
			r.twice[o.phase]++
			r.errs = append(r.errs, fmt.Sprintf("%s: op %s applied %d times, at %v", o.doc, key, len(vs), vs))
		}
		if o.expired {
			r.expired[o.phase]++
			r.expiredOps = append(r.expiredOps, fmt.Sprintf("%s: op %s refused op_expired %v after it was first sent (resent %d after a reject, %d after a reconnect); logged at %v",
				o.doc, key, o.answered.Sub(o.issued).Round(time.Millisecond), o.resentReject, o.resentConn, vs))
			continue
		}
		if !o.acked {
			r.errs = append(r.errs, fmt.Sprintf("%s: op %s never acknowledged (logged at %v)", o.doc, key, vs))
			continue
		}
		r.acked[o.phase]++
		if o.dup {
			r.dups[o.phase]++
		}
		switch {
		case len(vs) == 0:
			r.lost[o.phase]++
			if o.resentReject+o.resentConn == 0 {
				r.lostOnce[o.phase]++
			} else {
				r.lostResent[o.phase]++
			}
			if strings.HasPrefix(o.client, "rest") {
				r.lostREST[o.phase]++
			}
			r.errs = append(r.errs, fmt.Sprintf("%s: op %s acknowledged at v%d (dup %v, resent %d after a reject, %d after a reconnect) is not in the log",
				o.doc, key, o.version, o.dup, o.resentReject, o.resentConn))
		case !slices.Contains(vs, o.version):
			r.moved[o.phase]++
			r.errs = append(r.errs, fmt.Sprintf("%s: op %s acknowledged at v%d (dup %v) is in the log at %v", o.doc, key, o.version, o.dup, vs))
		}
	}
	for d, ops := range logs {
		for key, vs := range ops {
			if !issued[d+" "+key] {
				r.errs = append(r.errs, fmt.Sprintf("%s: logged op %s at %v was never issued", d, key, vs))
			}
		}
	}
	return r
}

// wsWriter is a WebSocket writer that keeps window ops in flight,
// alternating between its documents. It resends a refused op with its op id
// after a retryable reject, and every unanswered op after a reconnect (to
// the next replica when the one in use is gone).
type wsWriter struct {
	id   string
	urls []string
	docs []string
	led  *ledger

	mu      sync.Mutex
	conn    *websocket.Conn
	cur     int
	next    uint64
	pending map[uint64]*wsPending
	wake    chan struct{}
}

type wsPending struct {
	rec       *opRec
	msg       protocol.Message
	sent      bool
	notBefore time.Time
	first     time.Time
}

const wsWindow = 4

func (w *wsWriter) signal() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// run writes until stop is closed, then until every op is answered.
func (w *wsWriter) run(stop <-chan struct{}) {
	backoff := 50 * time.Millisecond
	for {
		stopping := false
		select {
		case <-stop:
			stopping = true
		default:
		}
		w.mu.Lock()
		conn := w.conn
		if stopping && len(w.pending) == 0 {
			w.mu.Unlock()
			if conn != nil {
				conn.Close(websocket.StatusNormalClosure, "done")
			}
			return
		}
		for !stopping && len(w.pending) < wsWindow {
			w.next++
			doc := w.docs[int(w.next)%len(w.docs)]
			m := protocol.Message{T: protocol.TOp, Doc: doc, Op: w.next, Ops: incOps(w.id)}
			w.pending[w.next] = &wsPending{rec: w.led.issue(w.id, doc, w.next), msg: m, first: time.Now()}
		}
		var send []*wsPending
		now := time.Now()
		for _, p := range w.pending {
			if now.Sub(p.first) > 90*time.Second {
				w.led.fail("%s: op %d on %s unanswered for 90s", w.id, p.msg.Op, p.msg.Doc)
				delete(w.pending, p.msg.Op)
				continue
			}
			if !p.sent && !now.Before(p.notBefore) {
				send = append(send, p)
			}
		}
		w.mu.Unlock()
		if conn == nil {
			if err := w.connect(); err != nil {
				time.Sleep(backoff) // the client's reconnect backoff
				backoff = min(2*backoff, 500*time.Millisecond)
			} else {
				backoff = 50 * time.Millisecond
			}
			continue
		}
		slices.SortFunc(send, func(a, b *wsPending) int { return int(a.msg.Op) - int(b.msg.Op) })
		for _, p := range send {
			// An op counts as sent only on the connection in use: when that
			// one ends, its reader marks every sent op for resending.
			w.mu.Lock()
			live := w.conn == conn
			p.sent = live
			w.mu.Unlock()
			if !live {
				break
			}
			if err := wsWrite(conn, p.msg); err != nil {
				conn.CloseNow() // the reader marks every op unsent
				break
			}
		}
		select {
		case <-w.wake:
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (w *wsWriter) connect() error {
	w.mu.Lock()
	url := w.urls[w.cur]
	w.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := w.hello(ctx, url)
	if err != nil {
		w.mu.Lock()
		w.cur = (w.cur + 1) % len(w.urls)
		w.mu.Unlock()
		return err
	}
	w.mu.Lock()
	w.conn = conn
	w.mu.Unlock()
	go w.read(conn)
	return nil
}

func (w *wsWriter) hello(ctx context.Context, url string) (*websocket.Conn, error) {
	conn, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{Subprotocols: []string{protocol.SubprotocolJSON}})
	if err != nil {
		return nil, err
	}
	if err := wsWrite(conn, protocol.Message{T: protocol.THello, Client: w.id, Proto: protocol.Version}); err != nil {
		conn.CloseNow()
		return nil, err
	}
	_, b, err := conn.Read(ctx)
	if err == nil {
		var m protocol.Message
		if m, err = protocol.Decode(b); err == nil && m.T != protocol.TWelcome {
			err = fmt.Errorf("%s: expected welcome, got %s %s", url, m.T, m.Code)
		}
	}
	if err != nil {
		conn.CloseNow()
		return nil, err
	}
	return conn, nil
}

// read handles the answers on conn; when it ends, every unanswered op is
// sent again on the next connection.
func (w *wsWriter) read(conn *websocket.Conn) {
	defer func() {
		conn.CloseNow()
		w.mu.Lock()
		if w.conn == conn {
			w.conn = nil
		}
		for _, p := range w.pending {
			if p.sent {
				p.sent = false
				w.led.resent(p.rec, false)
			}
		}
		w.mu.Unlock()
		w.signal()
	}()
	for {
		_, b, err := conn.Read(context.Background())
		if err != nil {
			return
		}
		m, err := protocol.Decode(b)
		if err != nil {
			w.led.fail("%s: %v", w.id, err)
			return
		}
		switch m.T {
		case protocol.TPing:
			go func() { _ = wsWrite(conn, protocol.Message{T: protocol.TPong, TS: m.TS}) }()
		case protocol.TAck:
			w.mu.Lock()
			p := w.pending[m.Op]
			if p != nil && p.msg.Doc == m.Doc {
				delete(w.pending, m.Op)
				w.led.ack(p.rec, m.V, m.Dup)
			}
			w.mu.Unlock()
			if p == nil {
				w.led.fail("%s: ack of op %d on %s, which is not in flight", w.id, m.Op, m.Doc)
			}
			w.signal()
		case protocol.TReject:
			w.mu.Lock()
			p := w.pending[m.Op]
			if p != nil && m.Code == codeOpExpired {
				delete(w.pending, m.Op)
				w.led.expire(p.rec)
			} else if p != nil && retryable(m.Code) {
				p.sent = false
				p.notBefore = time.Now().Add(time.Duration(10+p.rec.resentReject%20*10) * time.Millisecond)
				w.led.resent(p.rec, true)
			} else if p != nil {
				delete(w.pending, m.Op)
				w.led.fail("%s: op %d on %s refused: %s %s", w.id, m.Op, m.Doc, m.Code, m.Msg)
			}
			w.mu.Unlock()
			w.signal()
		case protocol.TError:
			w.led.fail("%s: error %s %s", w.id, m.Code, m.Msg)
		}
	}
}

// drop breaks the connection without a close handshake, as a network
// failure would.
func (w *wsWriter) drop() {
	w.mu.Lock()
	conn := w.conn
	w.mu.Unlock()
	if conn != nil {
		conn.CloseNow()
	}
}

func wsWrite(conn *websocket.Conn, m protocol.Message) error {
	b, err := protocol.Encode(m)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return conn.Write(ctx, websocket.MessageText, b)
}

// codeOpExpired refuses an op id older than the server's idempotency
// window: the server cannot tell whether it was applied.
const codeOpExpired core.Code = "op_expired"

// retryable codes: nothing was stored, and the same op may be sent again.
func retryable(c core.Code) bool {
	switch c {
	case core.CodeUnavailable, core.CodeShuttingDown, core.CodeRateLimited, core.CodeInternal, core.CodeConflict:
		return true
	}
	return false
}

// restWriter is a REST writer; several goroutines share its client id and
// op-id sequence, as parallel requests of one client would. A request
// answered 5xx or 429, timed out or refused is retried with the same op id on the
// next replica.
type restWriter struct {
	id   string
	urls []string
	docs []string
	led  *ledger
	next atomic.Uint64
}

var restClient = &http.Client{Timeout: 3 * time.Second}

func (w *restWriter) body() string {
	b, _ := json.Marshal(map[string]any{"ops": incOps(w.id)})
	return string(b)
}

func (w *restWriter) run(stop <-chan struct{}, k int) {
	body := w.body()
	for i := k; ; i++ {
		select {
		case <-stop:
			return
		default:
		}
		op := w.next.Add(1)
		doc := w.docs[i%len(w.docs)]
		w.send(w.led.issue(w.id, doc, op), body, k, false)
	}
}

// send sends rec's op until it is answered. With answerLost the answer is
// dropped, as if the response never arrived, and the op stays unacknowledged.
func (w *restWriter) send(rec *opRec, body string, replica int, answerLost bool) {
	start := time.Now()
	for attempt := 0; ; attempt++ {
		url := w.urls[(replica+attempt)%len(w.urls)] + "/v1/docs/" + rec.doc
		status, res, err := restPatch(url, body, w.id, rec.op)
		switch {
		case err == nil && (status == http.StatusOK || status == http.StatusCreated):
			var a struct {
				Version   int64 `json:"version"`
				Duplicate bool  `json:"duplicate"`
			}
			if err := json.Unmarshal(res, &a); err != nil || a.Version == 0 {
				w.led.fail("%s: op %d on %s: answer %s", w.id, rec.op, rec.doc, res)
				return
			}
			if !answerLost {
				w.led.ack(rec, a.Version, a.Duplicate)
			}
			return
		case err == nil && status < 500 && status != http.StatusTooManyRequests:
			var e struct {
				Error struct{ Code core.Code } `json:"error"`
			}
			if json.Unmarshal(res, &e) == nil && e.Error.Code == codeOpExpired {
				w.led.expire(rec)
				return
			}
			w.led.fail("%s: op %d on %s: %d %s", w.id, rec.op, rec.doc, status, res)
			return
		}
		if time.Since(start) > 90*time.Second {
			w.led.fail("%s: op %d on %s not acknowledged within 90s: %d %s %v", w.id, rec.op, rec.doc, status, res, err)
			return
		}
		w.led.resent(rec, err == nil)
		time.Sleep(time.Duration(10+min(attempt, 20)*10) * time.Millisecond) // the writer's backoff before it resends
	}
}

func restPatch(url, body, clientID string, op uint64) (int, []byte, error) {
	req, err := http.NewRequest(http.MethodPatch, url, strings.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Client-ID", clientID)
	req.Header.Set("X-Op-ID", strconv.FormatUint(op, 10))
	res, err := restClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return res.StatusCode, b, err
}

// crowd writes doc from many clients while some answers are lost: each of
// forgetful fresh clients sends one op and loses the answer, then crowd
// more clients write one op each, then the forgetful ones send their op
// again with the same op id (a client retrying a request whose response it
// never got). The retries must be answered with the original versions: a
// server that forgets clients by count rather than by time applies them
// twice.
func crowd(urls []string, led *ledger, doc string, forgetful, crowd int) {
	late := make([]*restWriter, forgetful)
	recs := make([]*opRec, forgetful)
	for i := range forgetful {
		late[i] = &restWriter{id: fmt.Sprintf("late%d", i), urls: urls, docs: []string{doc}, led: led}
		recs[i] = led.issue(late[i].id, doc, 1)
	}
	// each runs f(0..n-1) on 16 goroutines, until a writer fails.
	each := func(n int, f func(i int)) {
		ids := make(chan int)
		var wg sync.WaitGroup
		for range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range ids {
					if !led.failed() {
						f(i)
					}
				}
			}()
		}
		for i := range n {
			ids <- i
		}
		close(ids)
		wg.Wait()
	}
	each(forgetful, func(i int) { late[i].send(recs[i], late[i].body(), i, true) })
	each(crowd, func(i int) {
		w := &restWriter{id: fmt.Sprintf("crowd%d", i), urls: urls, docs: []string{doc}, led: led}
		w.send(led.issue(w.id, doc, 1), w.body(), i, false)
	})
	each(forgetful, func(i int) {
		led.resent(recs[i], false)
		late[i].send(recs[i], late[i].body(), i, false)
	})
}
