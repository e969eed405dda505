// Package client is the Go client of the sync protocol: it connects over
// WebSocket, subscribes to documents from the version it has, keeps a local
// copy of each by applying deltas in order, sends ops and waits for their
// acks, and after a dropped connection reconnects with backoff, resumes every
// document from its version and resends unacknowledged ops (same op ids, so
// the server applies each once). Given several endpoints (replicas), it
// reconnects to the next one when the one in use is gone.
package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/merge"
	"github.com/open-autoglm/autoglm/app/protocol"
)

// Options configure a client.
type Options struct {
	ClientID string // stable id for idempotent retries; empty: the server assigns one
	Token    string
	// Roles are claimed in hello; servers honour them only while
	// authentication is off (development, demos).
	Roles []string
	// NoReconnect turns off reconnecting after a dropped connection. By
	// default the client reconnects with capped, jittered backoff (never
	// after Close or a close code that forbids it).
	NoReconnect bool
	// JSON speaks JSON text frames (autoglm.json.v1) instead of the binary
	// encoding (autoglm.bin.v1), e.g. to read the traffic while debugging.
	JSON bool
	// URLs are further sync endpoints (other replicas). A reconnect tries
	// the endpoint in use first, then the others in turn.
	URLs       []string
	MinBackoff time.Duration // default 100ms
	MaxBackoff time.Duration // default 5s
	// OnMessage, if set, sees every message received (for tools and tests);
	// it runs on the reader goroutine and must be quick.
	OnMessage  func(m protocol.Message, size int)
	HTTPClient *http.Client
	Header     http.Header
}

// Ack is the answer to an op.
type Ack struct {
	Doc     string
	Op      uint64
	Version int64
	Dup     bool
	Err     *core.Error // set when the server rejected the op
}

// Client is a connection to a sync endpoint. Methods are safe for
// concurrent use.
type Client struct {
	urls []string
	opt  Options

	mu       sync.Mutex
	conn     *Conn
	clientID string
	cur      int // index in urls of the endpoint in use
	nextOp   uint64
	docs     map[string]*Doc
	pending  map[opKey]*pendingOp
	closed   bool
	connDone chan struct{}
	err      error
	// queries are the live queries (query.go).
	queries map[string]*Query
	nextQID int
	// proto is the protocol version spoken (0: protocol.Version); 1 after
	// a server older than the compact forms refused version 2.
	proto int
}

type opKey struct {
	doc string
	op  uint64
}

type pendingOp struct {
	msg  protocol.Message
	done chan Ack
}

// Doc is the client's copy of one document.
type Doc struct {
	Name string
	h    uint64 // the document's handle in subs (its place among the client's documents)

	mu      sync.Mutex
	version int64
	data    map[string]any
	deleted bool
	synced  chan struct{}
	notify  chan struct{}
}

// Version returns the version of the local copy.
func (d *Doc) Version() int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.version
}

// Data returns a deep copy of the local data.
func (d *Doc) Data() map[string]any {
	d.mu.Lock()
	defer d.mu.Unlock()
	c := merge.NewDoc()
	c.Data = d.data
	return c.Clone().Data
}

// Deleted reports whether the document is a tombstone.
func (d *Doc) Deleted() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.deleted
}

// Changed is signalled (without blocking) after every applied change.
func (d *Doc) Changed() <-chan struct{} { return d.notify }

// WaitVersion blocks until the local copy reaches at least v.
func (d *Doc) WaitVersion(ctx context.Context, v int64) error {
	for {
		if d.Version() >= v {
			return nil
		}
		select {
		case <-d.notify:
		case <-ctx.Done():
			return fmt.Errorf("%s at version %d, waiting for %d: %w", d.Name, d.Version(), v, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// apply advances the copy by one message; out-of-order input is a protocol
// violation the server never produces, so it is refused rather than guessed.
func (d *Doc) apply(m protocol.Message, ops []merge.FieldOp) error {
	d.mu.Lock()
	defer func() {
		d.mu.Unlock()
		select {
		case d.notify <- struct{}{}:
		default:
		}
	}()
	if m.T == protocol.TSnap {
		d.version, d.data, d.deleted = m.V, m.Data, m.Del
		if d.data == nil {
			d.data = map[string]any{}
		}
		return nil
	}
	if m.V != d.version+1 {
		return fmt.Errorf("%s: got version %d after %d", d.Name, m.V, d.version)
	}
	if m.New || m.Del || d.data == nil {
		d.data = map[string]any{}
	}
	if err := merge.ApplyPlain(d.data, ops); err != nil {
		return err
	}
	d.version, d.deleted = m.V, m.Del
	return nil
}

// Dial connects and says hello. url is ws://host/v1/sync.
func Dial(ctx context.Context, url string, opt Options) (*Client, error) {
	if opt.MinBackoff <= 0 {
		opt.MinBackoff = 100 * time.Millisecond
	}
	if opt.MaxBackoff <= 0 {
		opt.MaxBackoff = 5 * time.Second
	}
	urls := []string{url}
	for _, u := range opt.URLs {
		if !slices.Contains(urls, u) {
			urls = append(urls, u)
		}
	}
	c := &Client{urls: urls, opt: opt, clientID: opt.ClientID, docs: map[string]*Doc{}, pending: map[opKey]*pendingOp{}}
	if err := c.connect(ctx, 0); err != nil {
		return nil, err
	}
	return c, nil
}

// ID returns the client id (assigned by the server if none was given).
func (c *Client) ID() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.clientID
}

// URL returns the sync endpoint in use (or last used).
func (c *Client) URL() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.urls[c.cur]
}

func (c *Client) connect(ctx context.Context, i int) error {
	protos := []string{protocol.SubprotocolBinary, protocol.SubprotocolJSON}
	if c.opt.JSON {
		protos = []string{protocol.SubprotocolJSON}
	}
	c.mu.Lock()
	hello := protocol.Message{Client: c.clientID, Token: c.opt.Token, Roles: c.opt.Roles, Proto: c.proto}
	c.mu.Unlock()
	conn, err := DialConn(ctx, c.urls[i], ConnOptions{
		Subprotocols: protos, HTTPClient: c.opt.HTTPClient, Header: c.opt.Header, Hello: hello,
	})
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.conn, c.clientID, c.cur, c.proto = conn, conn.Welcome().Client, i, conn.Proto()
	c.connDone = make(chan struct{})
	done := c.connDone
	// Resume: resubscribe from the versions held, then resend unanswered ops
	// in op-id order.
	var subs, resend []protocol.Message
	for name, d := range c.docs {
		subs = append(subs, protocol.Message{T: protocol.TSub, Doc: name, Since: d.Version(), H: d.h})
	}
	for _, q := range c.queries {
		resend = append(resend, q.sub())
	}
	ops := make([]protocol.Message, 0, len(c.pending))
	for _, p := range c.pending {
		ops = append(ops, p.msg)
	}
	c.mu.Unlock()
	sortByOp(ops)
	for _, m := range subs {
		if _, err := conn.Sub(ctx, m); err != nil {
			conn.CloseNow()
			return err
		}
	}
	for _, m := range append(resend, ops...) {
		if err := conn.Send(ctx, m); err != nil {
			conn.CloseNow()
			return err
		}
	}
	go c.readLoop(conn, done)
	return nil
}

func sortByOp(ms []protocol.Message) {
	for i := 1; i < len(ms); i++ {
		for j := i; j > 0 && ms[j].Op < ms[j-1].Op; j-- {
			ms[j], ms[j-1] = ms[j-1], ms[j]
		}
	}
}

// readLoop handles every message (those that came with the welcome first)
// until the connection ends.
func (c *Client) readLoop(conn *Conn, done chan struct{}) {
	ctx := context.Background()
	var err error
	for err == nil {
		var ms []protocol.Message
		var size int
		if ms, size, err = conn.Read(ctx); err != nil {
			break
		}
		for _, m := range ms {
			if err = c.receive(ctx, conn, m, size); err != nil {
				break
			}
			// One WebSocket message may hold several binary messages: the
			// size counts once.
			size = 0
		}
	}
	conn.CloseNow()
	close(done)
	c.mu.Lock()
	closed := c.closed
	if c.conn == conn {
		c.conn = nil
	}
	c.mu.Unlock()
	code := int(websocket.CloseStatus(err))
	if closed || c.opt.NoReconnect || (code >= 4000 && !protocol.Reconnectable(code)) {
		c.fail(err)
		return
	}
	go c.reconnect()
}

func (c *Client) reconnect() {
	backoff := c.opt.MinBackoff
	c.mu.Lock()
	first := c.cur
	c.mu.Unlock()
	for attempt := 0; ; attempt++ {
		// Jitter keeps a fleet of clients from reconnecting in step; the
		// wait never exceeds MaxBackoff.
		time.Sleep(backoff/2 + time.Duration(rand.Int64N(int64(backoff/2)+1)))
		c.mu.Lock()
		closed := c.closed
		c.mu.Unlock()
		if closed {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := c.connect(ctx, (first+attempt)%len(c.urls))
		cancel()
		if err == nil {
			return
		}
		backoff = min(backoff*2, c.opt.MaxBackoff)
	}
}

func (c *Client) fail(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err == nil {
		c.err = err
		if c.err == nil {
			c.err = errors.New("connection closed")
		}
	}
	for k, p := range c.pending {
		p.done <- Ack{Doc: k.doc, Op: k.op, Err: &core.Error{Code: core.CodeUnavailable, Message: "connection closed"}}
		delete(c.pending, k)
	}
}

func (c *Client) receive(ctx context.Context, conn *Conn, m protocol.Message, size int) error {
	if c.opt.OnMessage != nil {
		c.opt.OnMessage(m, size)
	}
	return c.handle(ctx, conn, m)
}

func (c *Client) handle(ctx context.Context, conn *Conn, m protocol.Message) error {
	if m.QID != "" {
		return c.queryMessage(ctx, m)
	}
	switch m.T {
	case protocol.TPing:
		return conn.Send(ctx, protocol.Message{T: protocol.TPong, TS: m.TS})
	case protocol.TSnap, protocol.TDelta:
		d := c.doc(m.Doc)
		if d == nil {
			return nil
		}
		if m.T == protocol.TDelta && m.V <= d.Version() {
			return nil
		}
		// A delta of this client's own op (sent before a reconnect) answers
		// the op too.
		if m.T == protocol.TDelta && m.By != "" && m.By == c.ID() {
			c.answer(Ack{Doc: m.Doc, Op: m.Op, Version: m.V})
		}
		return d.apply(m, m.Ops)
	case protocol.TSynced:
		if d := c.doc(m.Doc); d != nil {
			select {
			case <-d.synced:
			default:
				close(d.synced)
			}
		}
	case protocol.TAck:
		c.mu.Lock()
		p := c.pending[opKey{m.Doc, m.Op}]
		c.mu.Unlock()
		if d := c.doc(m.Doc); d != nil && !m.Dup && m.V == d.Version()+1 {
			ops := m.Ops
			if ops == nil && p != nil {
				ops = p.msg.Ops
			}
			if err := d.apply(m, ops); err != nil {
				return err
			}
		}
		c.answer(Ack{Doc: m.Doc, Op: m.Op, Version: m.V, Dup: m.Dup})
	case protocol.TReject:
		c.answer(Ack{Doc: m.Doc, Op: m.Op, Err: &core.Error{Code: m.Code, Message: m.Msg, Details: m.Details}})
	case protocol.TError:
		if d := c.doc(m.Doc); d != nil && m.Doc != "" {
			select {
			case <-d.synced:
			default:
				close(d.synced)
			}
		}
	}
	return nil
}

func (c *Client) answer(a Ack) {
	c.mu.Lock()
	p, ok := c.pending[opKey{a.Doc, a.Op}]
	delete(c.pending, opKey{a.Doc, a.Op})
	c.mu.Unlock()
	if ok {
		p.done <- a
	}
}

func (c *Client) doc(name string) *Doc {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.docs[name]
}

// Subscribe watches doc from version since (0: from a snapshot) and waits
// until the local copy has caught up.
func (c *Client) Subscribe(ctx context.Context, doc string, since int64) (*Doc, error) {
	if _, err := core.ParseKey(doc); err != nil {
		return nil, err
	}
	c.mu.Lock()
	d, ok := c.docs[doc]
	if !ok {
		d = &Doc{Name: doc, version: since, synced: make(chan struct{}), notify: make(chan struct{}, 1), h: uint64(len(c.docs) + 1)}
		c.docs[doc] = d
	}
	conn := c.conn
	c.mu.Unlock()
	if conn == nil {
		return d, errors.New("not connected")
	}
	if _, err := conn.Sub(ctx, protocol.Message{T: protocol.TSub, Doc: doc, Since: since, H: d.h}); err != nil {
		return d, err
	}
	select {
	case <-d.synced:
		return d, nil
	case <-ctx.Done():
		return d, ctx.Err()
	}
}

// Send submits field ops for doc based on version base, and returns a channel
// that receives the answer. Ops sent while disconnected are queued and sent
// on reconnect.
func (c *Client) Send(doc string, base int64, ops ...merge.FieldOp) <-chan Ack {
	done := make(chan Ack, 1)
	c.mu.Lock()
	c.nextOp++
	m := protocol.Message{T: protocol.TOp, Doc: doc, Op: c.nextOp, Base: base, Ops: ops}
	c.pending[opKey{doc, m.Op}] = &pendingOp{msg: m, done: done}
	conn := c.conn
	c.mu.Unlock()
	if conn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = conn.Send(ctx, m) // on failure the reconnect resends it
	}
	return done
}

// Do sends ops and waits for the answer.
func (c *Client) Do(ctx context.Context, doc string, base int64, ops ...merge.FieldOp) (Ack, error) {
	select {
	case a := <-c.Send(doc, base, ops...):
		if a.Err != nil {
			return a, a.Err
		}
		return a, nil
	case <-ctx.Done():
		return Ack{}, ctx.Err()
	}
}

// Close ends the connection for good.
func (c *Client) Close() error {
	c.mu.Lock()
	c.closed = true
	conn, done := c.conn, c.connDone
	c.mu.Unlock()
	if conn != nil {
		_ = conn.Close("bye")
		<-done
	}
	return nil
}

// Drop breaks the connection without a close handshake, as a network failure
// would; unless NoReconnect is set the client resumes.
func (c *Client) Drop() {
	c.mu.Lock()
	conn := c.conn
	c.mu.Unlock()
	if conn != nil {
		conn.CloseNow()
	}
}

// Subprotocol names the encoding of the connection in use
// (autoglm.bin.v1 or autoglm.json.v1); empty while disconnected.
func (c *Client) Subprotocol() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn == nil {
		return ""
	}
	return c.conn.Subprotocol()
}

// Connected reports whether a connection is up.
func (c *Client) Connected() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.conn != nil
}

// FieldOp is one field operation of an op.
type FieldOp = merge.FieldOp

// Set, Unset and Inc build field ops.
func Set(path string, v any) merge.FieldOp {
	return merge.FieldOp{Op: merge.KindSet, Path: path, Value: mustJSON(v)}
}

// Unset removes a field.
func Unset(path string) merge.FieldOp { return merge.FieldOp{Op: merge.KindUnset, Path: path} }

// Inc adds n to a counter.
func Inc(path string, n float64) merge.FieldOp {
	return merge.FieldOp{Op: merge.KindInc, Path: path, Value: mustJSON(n)}
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}
