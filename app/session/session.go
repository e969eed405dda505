// Package session is the per-connection sync state machine, independent of
// the transport: hello, subscribe with catch-up from a version, live deltas
// in version order without gaps or duplicates, op submission and acks, and
// heartbeats.
//
// Every subscribed document has a "last delivered" version. Whatever arrives
// (a local fast-path change, a broadcast from another replica, the result of
// the client's own op) is delivered only as version last+1; anything older is
// a duplicate and dropped, anything newer means a gap, which is pulled from
// the op log first. Broadcasts are hints; the log is the truth.
package session

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/open-autoglm/autoglm/app/auth"
	"github.com/open-autoglm/autoglm/app/collections"
	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/engine"
	"github.com/open-autoglm/autoglm/app/hub"
	"github.com/open-autoglm/autoglm/app/merge"
	"github.com/open-autoglm/autoglm/app/protocol"
	"github.com/open-autoglm/autoglm/app/query/live"
)

// Sender writes one message to the client. It may block up to its own write
// deadline and returns an error when the connection is gone or too slow.
type Sender interface {
	Send(ctx context.Context, m protocol.Message) error
}

// Backend is what a session needs from the rest of the service.
type Backend interface {
	Submit(k core.Key, op core.Op, done func(engine.Result))
	Load(ctx context.Context, k core.Key) (core.Stored, error)
	Changes(ctx context.Context, k core.Key, from, to int64) ([]core.Change, error)
}

// Hub is where a session registers for live changes and presence.
type Hub interface {
	Subscribe(doc string, s hub.Subscriber)
	Unsubscribe(doc string, s hub.Subscriber)
	SetPresence(from hub.Subscriber, p core.Presence)
	PresenceOf(doc string) []core.Presence
}

// maxRateDelay is the longest a connection's reader waits for its rate
// limit before the client counts as flooding.
const maxRateDelay = 5 * time.Second

// MaxPresenceBytes bounds one client's presence data on one document.
const MaxPresenceBytes = 1024

// Options configure a session.
type Options struct {
	ID        string
	Node      string
	Heartbeat time.Duration // ping interval; the peer is dead after 2.5 intervals of silence
	Queue     int           // live changes buffered before the session falls back to a resync
	InFlight  int           // ops submitted and not yet answered
	MaxSubs   int           // documents watched at once
	Now       func() time.Time
	// Authenticate verifies the token a client presents in hello (or in a
	// later auth message to refresh it); nil accepts everyone.
	Authenticate func(ctx context.Context, token string) (auth.Identity, error)
	// Policy decides which collections the identity may read.
	Policy auth.Policy
	// Rate limits inbound messages per connection (0: unlimited); Burst is
	// the bucket size. Over the rate the connection is read more slowly; a
	// client that would have to wait more than 5 s is disconnected
	// (close code 4004).
	Rate  rate.Limit
	Burst int
	// HelloRoles honours roles a client claims in hello. Only for
	// deployments without authentication (the embedded default), where the
	// demo and local tools act in a role; with auth the roles come from the
	// verified token.
	HelloRoles bool
	// NewClientID names a client that did not name itself in hello.
	NewClientID func() string
	// Admit, when set, is asked for a connection slot of the identity hello
	// authenticated; an error closes the session with 4004 rate_limited.
	// release is called when the session ends.
	Admit func(id auth.Identity) (release func(), err error)
	// Metrics hooks; nil ones are ignored.
	GapRepaired func()
	Resynced    func()
	// Delivered sees each live change as it is written to the client.
	Delivered func(c core.Change)
	// QueueDepth sees how many live changes are still queued each time the
	// session takes one.
	QueueDepth func(n int)
	// Ops, if set, follows each op from receipt to ack (observe.go).
	Ops OpObserver
	// Queries serves live queries (query.go); nil refuses them.
	Queries *live.Engine
}

// Close is why a session ended: a WebSocket close code and a reason.
type Close struct {
	Code   int
	Reason string
}

type docState struct {
	key  core.Key
	last int64
	// full: the client asked for the whole document on every change (the
	// full-push baseline/compat mode) instead of deltas.
	full bool
	// view is what the session may see of the document at version last
	// under the collection's read rules (the zero View: everything;
	// collections.UnknownView: nothing until the rules are evaluated again,
	// after a failed read).
	view collections.View
}

type pendingOp struct {
	doc string
	op  uint64
}

// Session is one client connection's sync state. Receive is called by the
// transport's reader; everything else runs on the goroutine that calls Run,
// except the delivery of a live change to an idle session, which the hub's
// fan-out does itself when the transport can take it without blocking
// (Offer, inline.go).
type Session struct {
	opt     Options
	backend Backend
	hub     Hub
	send    Sender
	// inline is the transport when it can take a delta without blocking
	// (nil: every live change goes through the queue).
	inline QueueSender

	// mu guards the state below "Owned by the Run goroutine": Run holds it
	// while it handles anything, and Offer takes it only when it is free.
	mu sync.Mutex
	// ended is set under mu when Run returns: no more inline deliveries;
	// gone is the same for Offer's queue, which then takes nothing.
	ended bool
	gone  atomic.Bool

	inbox chan protocol.Message
	// events and results hold pointers: their buffers are allocated up
	// front for every connection, and a pointer is 8 bytes where a Change
	// or Result is over 100, which decides the memory of idle connections.
	events   chan *core.Change
	presence chan core.Presence
	results  chan *engine.Result
	inflight chan struct{}
	lost     chan struct{}
	failed   chan Close
	lastRecv atomic.Int64

	// Owned by the Run goroutine.
	client   string
	identity auth.Identity
	release  func() // the identity's connection slot (Admit)
	expiry   *time.Timer
	limiter  *rate.Limiter
	hello    bool
	docs     map[string]*docState
	pending  map[pendingOp]protocol.Message
	// present holds the presence data this session set, per document; it is
	// refreshed every heartbeat and cleared when the session ends.
	present map[string]map[string]any
	// qs holds the live queries (query.go).
	qs queryState
	// wire puts messages into the compact forms of proto 2 (wire.go).
	wire *wire
}

// New returns a session; call Run to serve it.
func New(opt Options, backend Backend, hub Hub, send Sender) *Session {
	if opt.Heartbeat <= 0 {
		opt.Heartbeat = 15 * time.Second
	}
	if opt.Queue <= 0 {
		opt.Queue = 1024
	}
	if opt.InFlight <= 0 {
		opt.InFlight = 256
	}
	if opt.MaxSubs <= 0 {
		opt.MaxSubs = 1000
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	inline, _ := send.(QueueSender) // the transport's own: queueDelta applies the wire forms
	w := &wire{}
	send = w.wrap(send)
	if opt.Ops != nil {
		send = observed(send, opt.Ops)
	}
	var limiter *rate.Limiter
	if opt.Rate > 0 {
		limiter = rate.NewLimiter(opt.Rate, max(opt.Burst, 1))
	}
	s := &Session{
		opt: opt, backend: backend, hub: hub, send: send, inline: inline,
		inbox:    make(chan protocol.Message),
		events:   make(chan *core.Change, opt.Queue),
		presence: make(chan core.Presence, 64),
		results:  make(chan *engine.Result, opt.InFlight),
		inflight: make(chan struct{}, opt.InFlight),
		lost:     make(chan struct{}, 1),
		failed:   make(chan Close, 1),
		docs:     map[string]*docState{},
		pending:  map[pendingOp]protocol.Message{},
		present:  map[string]map[string]any{},
		limiter:  limiter,
		qs:       newQueryState(),
		wire:     w,
	}
	s.lastRecv.Store(opt.Now().UnixNano())
	return s
}

// Client returns the client id (after hello).
func (s *Session) Client() string { return s.client }

// Offer takes a live change from the hub without blocking. An idle session
// whose transport takes the delta without blocking gets it delivered here,
// on the caller's goroutine (offerInline); otherwise it is queued for Run.
// When the queue is full the change is dropped and the session resyncs its
// documents from the store, so a burst never costs the client a message.
func (s *Session) Offer(c core.Change) bool {
	if s.inline != nil && len(s.events) == 0 && s.mu.TryLock() {
		// Nothing queued and Run idle: c is the next thing this session
		// handles either way, so handling it here keeps the order.
		done := !s.ended && len(s.events) == 0 && s.offerInline(&c)
		s.mu.Unlock()
		if done {
			return true
		}
	}
	if s.gone.Load() {
		// Offered by a fan-out that began before the session left.
		handled(&c)
		return true
	}
	queued := c // only a queued change lives on the heap
	select {
	case s.events <- &queued:
		return true
	default:
		select {
		case s.lost <- struct{}{}:
		default:
		}
		return false
	}
}

// OfferPresence takes a presence update from the hub without blocking;
// presence is ephemeral, so a full queue drops it.
func (s *Session) OfferPresence(p core.Presence) bool {
	select {
	case s.presence <- p:
		return true
	default:
		return false
	}
}

// Receive hands one decoded client message to the session, blocking while the
// session is busy (backpressure on the connection) or too many ops are in
// flight. It returns false once the session has ended.
func (s *Session) Receive(ctx context.Context, m protocol.Message) bool {
	s.lastRecv.Store(s.opt.Now().UnixNano())
	if m.T == protocol.TOp && s.opt.Ops != nil {
		s.opt.Ops.Received(ctx, m)
	}
	if s.limiter != nil && m.T != protocol.TPong {
		// Over the rate the reader waits (backpressure on the connection);
		// a client that would have to wait long is flooding: disconnect it.
		r := s.limiter.Reserve()
		if d := r.Delay(); d > maxRateDelay {
			r.Cancel()
			s.Fail(protocol.CloseRateLimited, "too many messages")
			return false
		} else if d > 0 {
			select {
			case <-time.After(d):
			case <-ctx.Done():
				return false
			}
		}
	}
	if m.T == protocol.TOp {
		select {
		case s.inflight <- struct{}{}:
		case <-ctx.Done():
			return false
		}
	}
	select {
	case s.inbox <- m:
		return true
	case <-ctx.Done():
		return false
	}
}

// Fail ends the session with a close code (from the transport's reader, e.g.
// for an undecodable frame).
func (s *Session) Fail(code int, reason string) {
	select {
	case s.failed <- Close{Code: code, Reason: reason}:
	default:
	}
}

// Run serves the session until ctx ends, the peer goes silent, the transport
// fails or a protocol error occurs, and returns why it ended. ctx ending
// means the replica is shutting down.
func (s *Session) Run(ctx context.Context) Close {
	defer func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.ended = true
		s.gone.Store(true)
		if s.release != nil {
			s.release()
		}
		for doc := range s.present {
			s.hub.SetPresence(s, s.presenceOf(doc, nil))
		}
		for doc := range s.docs {
			s.hub.Unsubscribe(doc, s)
		}
		s.drainEvents()
		if s.opt.Ops != nil {
			s.opt.Ops.Close()
		}
		s.closeQueries()
	}()
	tick := time.NewTicker(s.opt.Heartbeat)
	defer tick.Stop()
	// The peer is dead 2.5 heartbeats after the last thing it sent: the
	// timer fires then, not at the next ping, which could be up to a whole
	// interval later.
	deadAfter := s.opt.Heartbeat * 5 / 2
	dead := time.NewTimer(deadAfter)
	defer dead.Stop()
	defer func() {
		if s.expiry != nil {
			s.expiry.Stop()
		}
	}()
	var pending <-chan struct{}
	if s.inline != nil {
		pending = s.inline.Pending()
	}
	for {
		if s.expired() {
			// Before anything else that is ready: select would pick among
			// them at random, and send more after the expiry.
			return Close{Code: protocol.CloseTokenExpired, Reason: "token expired"}
		}
		var err error
		var expired <-chan time.Time
		if s.expiry != nil {
			expired = s.expiry.C
		}
		select {
		case <-expired:
			return Close{Code: protocol.CloseTokenExpired, Reason: "token expired"}
		case <-ctx.Done():
			select {
			case c := <-s.failed:
				return c
			default:
			}
			return Close{Code: protocol.CloseShuttingDown, Reason: "server shutting down"}
		case c := <-s.failed:
			return c
		case m := <-s.inbox:
			s.mu.Lock()
			err = s.handle(ctx, m)
			s.mu.Unlock()
		case r := <-s.results:
			<-s.inflight
			s.mu.Lock()
			err = s.result(ctx, *r)
			s.mu.Unlock()
		case c := <-s.events:
			if s.opt.QueueDepth != nil {
				s.opt.QueueDepth(len(s.events))
			}
			s.mu.Lock()
			err = s.change(ctx, *c)
			s.mu.Unlock()
			handled(c)
		case <-pending:
			// What the fan-out left buffered when the connection could
			// not take it at once; Offer goes on buffering meanwhile.
			err = s.inline.Flush()
		case <-s.lost:
			s.mu.Lock()
			err = s.resync(ctx)
			s.mu.Unlock()
		case p := <-s.presence:
			s.mu.Lock()
			err = s.sendPresence(ctx, p)
			s.mu.Unlock()
		case b := <-s.qs.events:
			s.mu.Lock()
			err = s.queryEvents(ctx, b)
			s.mu.Unlock()
		case <-s.qs.lost:
			s.mu.Lock()
			err = s.resyncQueries(ctx)
			s.mu.Unlock()
		case <-dead.C:
			silent := s.opt.Now().Sub(time.Unix(0, s.lastRecv.Load()))
			if silent >= deadAfter {
				return Close{Code: protocol.CloseHeartbeatTimeout, Reason: "no heartbeat"}
			}
			dead.Reset(deadAfter - silent)
		case <-tick.C:
			s.mu.Lock()
			err = s.send.Send(ctx, protocol.Message{T: protocol.TPing, TS: s.opt.Now().UnixMilli()})
			for doc, data := range s.present {
				s.hub.SetPresence(s, s.presenceOf(doc, data))
			}
			s.mu.Unlock()
		}
		if err != nil {
			var c closeErr
			if errors.As(err, &c) {
				return Close(c)
			}
			return Close{Code: protocol.CloseSlowConsumer, Reason: "write failed"}
		}
	}
}

// closeErr ends the session with a code.
type closeErr Close

func (c closeErr) Error() string { return c.Reason }

func protocolError(reason string) error {
	return closeErr{Code: protocol.CloseProtocolError, Reason: reason}
}

func (s *Session) handle(ctx context.Context, m protocol.Message) error {
	if !s.hello && m.T != protocol.THello {
		if m.T == protocol.TOp {
			<-s.inflight
		}
		return protocolError("first message must be hello")
	}
	switch m.T {
	case protocol.THello:
		if s.hello {
			return protocolError("hello sent twice")
		}
		if m.Proto != 0 && (m.Proto < protocol.MinVersion || m.Proto > protocol.Version) {
			return closeErr{Code: protocol.CloseUnsupported, Reason: "unsupported protocol version"}
		}
		if err := s.authenticate(ctx, m.Token); err != nil {
			return err
		}
		if s.opt.Admit != nil {
			release, err := s.opt.Admit(s.identity)
			if err != nil {
				return closeErr{Code: protocol.CloseRateLimited, Reason: truncate(core.PublicMessage(err), 100)}
			}
			s.release = release
		}
		if s.opt.HelloRoles && s.identity.Anonymous {
			s.identity.Roles = m.Roles
		}
		s.hello = true
		requested := m.Client
		if requested == "" && s.opt.NewClientID != nil {
			requested = s.opt.NewClientID()
		}
		if len(requested) > 128 {
			return protocolError("client id longer than 128 bytes")
		}
		// With authentication the id is bound to the token's subject, so
		// no identity can use another's op ids, acks or presence.
		s.client = auth.ClientID(s.identity, requested)
		proto := max(m.Proto, protocol.MinVersion)
		s.wire.start(proto, s.client, s.opt.Node)
		return s.send.Send(ctx, protocol.Message{T: protocol.TWelcome, Session: s.opt.ID, Client: s.client,
			Node: s.opt.Node, HB: s.opt.Heartbeat.Milliseconds(), Proto: proto})
	case protocol.TSub:
		if m.QID != "" {
			return s.subscribeQuery(ctx, m)
		}
		return s.subscribe(ctx, m)
	case protocol.TUnsub:
		if m.QID != "" {
			s.unsubscribeQuery(m.QID)
			return nil
		}
		s.unsubscribe(m.Doc)
		return nil
	case protocol.TPresence:
		return s.setPresence(ctx, m)
	case protocol.TAuth:
		return s.refresh(ctx, m.Token)
	case protocol.TOp:
		return s.op(ctx, m)
	case protocol.TPing:
		return s.send.Send(ctx, protocol.Message{T: protocol.TPong, TS: m.TS})
	case protocol.TPong:
		return nil
	}
	return s.send.Send(ctx, protocol.Message{T: protocol.TError, Code: core.CodeBadRequest,
		Msg: "unknown message type " + truncate(m.T, 32)})
}

func (s *Session) subscribe(ctx context.Context, m protocol.Message) error {
	k, err := core.ParseKey(m.Doc)
	if err != nil {
		return s.send.Send(ctx, withDoc(protocol.ErrorMessage(protocol.TError, err), m.Doc))
	}
	if m.Since < 0 {
		return s.send.Send(ctx, withDoc(protocol.ErrorMessage(protocol.TError,
			core.Errorf(core.CodeBadRequest, "since must be >= 0")), m.Doc))
	}
	if err := s.opt.Policy.CanRead(s.identity, k.Collection); err != nil {
		return s.send.Send(ctx, withDoc(protocol.ErrorMessage(protocol.TError, err), m.Doc))
	}
	if _, ok := s.docs[m.Doc]; !ok && len(s.docs) >= s.opt.MaxSubs {
		return s.send.Send(ctx, withDoc(protocol.ErrorMessage(protocol.TError,
			core.Errorf(core.CodeTooLarge, "more than %d subscriptions on one connection", s.opt.MaxSubs)), m.Doc))
	}
	if err := s.wire.bind(m.Doc, m.H); err != nil {
		return s.send.Send(ctx, withDoc(protocol.ErrorMessage(protocol.TError, err), m.Doc))
	}
	st := &docState{key: k, last: m.Since, full: m.Full}
	s.docs[m.Doc] = st
	// Register before reading, so nothing committed from now on is missed;
	// anything that also shows up in the catch-up is dropped as a duplicate.
	s.hub.Subscribe(m.Doc, s)
	if err := s.catchUp(ctx, st, m.Since); err != nil {
		return err
	}
	if err := s.send.Send(ctx, protocol.Message{T: protocol.TSynced, Doc: m.Doc, V: st.last}); err != nil {
		return err
	}
	for _, p := range s.hub.PresenceOf(m.Doc) {
		if p.Session != s.opt.ID {
			if err := s.sendPresence(ctx, p); err != nil {
				return err
			}
		}
	}
	return nil
}

// authenticate verifies a token and adopts its identity, arming the
// expiry timer.
func (s *Session) authenticate(ctx context.Context, token string) error {
	s.identity = auth.Identity{Subject: "anonymous", Anonymous: true}
	if s.opt.Authenticate == nil {
		return nil
	}
	id, err := s.opt.Authenticate(ctx, token)
	if err != nil {
		return closeErr{Code: protocol.CloseUnauthorized, Reason: truncate(core.PublicMessage(err), 100)}
	}
	s.identity = id
	s.armExpiry()
	return nil
}

// expired reports whether the session's token has expired. Owned by Run
// (or called with mu held).
func (s *Session) expired() bool {
	return !s.identity.Expires.IsZero() && !s.opt.Now().Before(s.identity.Expires)
}

func (s *Session) armExpiry() {
	if s.expiry != nil {
		s.expiry.Stop()
		s.expiry = nil
	}
	if !s.identity.Expires.IsZero() {
		s.expiry = time.NewTimer(max(s.identity.Expires.Sub(s.opt.Now()), 0))
	}
}

// refresh replaces the session's token. The new token must name the same
// subject. Every subscription is checked again with the new roles: one the
// token no longer allows ends with an access_revoked error for its
// document, and nothing more of that document is sent. A document whose
// read rules now give the token another view is sent again as that view
// sees it (a snapshot, or not_readable).
func (s *Session) refresh(ctx context.Context, token string) error {
	if s.opt.Authenticate == nil {
		return s.send.Send(ctx, protocol.Message{T: protocol.TAuth})
	}
	id, err := s.opt.Authenticate(ctx, token)
	if err == nil && id.Subject != s.identity.Subject {
		err = core.Errorf(core.CodeForbidden, "a refreshed token must name the same subject")
	}
	if err != nil {
		return s.send.Send(ctx, protocol.ErrorMessage(protocol.TError, err))
	}
	s.identity = id
	s.armExpiry()
	for _, doc := range slices.Sorted(maps.Keys(s.docs)) {
		st := s.docs[doc]
		if err := s.opt.Policy.CanRead(id, st.key.Collection); err != nil {
			s.unsubscribe(doc)
			revoked := core.Errorf(core.CodeAccessRevoked, "the refreshed token may no longer read %s; the subscription has ended", truncate(doc, 200))
			if err := s.sendErr(ctx, doc, revoked); err != nil {
				return err
			}
			continue
		}
		if err := s.reView(ctx, st); err != nil {
			return err
		}
	}
	if err := s.refreshQueries(ctx, id); err != nil {
		return err
	}
	return s.send.Send(ctx, protocol.Message{T: protocol.TAuth, TS: id.Expires.UnixMilli()})
}

// setPresence records the client's presence on a watched document.
func (s *Session) setPresence(ctx context.Context, m protocol.Message) error {
	st, ok := s.docs[m.Doc]
	if !ok {
		return s.sendErr(ctx, m.Doc, core.Errorf(core.CodeBadRequest, "presence needs a subscription to %s", truncate(m.Doc, 200)))
	}
	if m.Data == nil || m.Del {
		s.clearPresence(m.Doc)
		return nil
	}
	if st.view.Key() == collections.DeniedView.Key() {
		return s.sendErr(ctx, m.Doc, core.Errorf(core.CodeNotReadable, "presence on %s needs read access to it", truncate(m.Doc, 200)))
	}
	if b, _ := json.Marshal(m.Data); len(b) > MaxPresenceBytes {
		return s.sendErr(ctx, m.Doc, core.Errorf(core.CodeTooLarge, "presence data over %d bytes", MaxPresenceBytes))
	}
	s.present[m.Doc] = m.Data
	s.hub.SetPresence(s, s.presenceOf(m.Doc, m.Data))
	return nil
}

// presenceOf is this session's presence on doc: data, or gone when nil. It
// names the client by its bound id and the token's subject, never by what
// the client claims.
func (s *Session) presenceOf(doc string, data map[string]any) core.Presence {
	p := core.Presence{Doc: doc, Client: s.client, Session: s.opt.ID, Data: data, Gone: data == nil}
	if !s.identity.Anonymous {
		p.Subject = s.identity.Subject
	}
	return p
}

// clearPresence withdraws this session's presence on doc, if it set one.
func (s *Session) clearPresence(doc string) {
	if _, ok := s.present[doc]; ok {
		delete(s.present, doc)
		s.hub.SetPresence(s, s.presenceOf(doc, nil))
	}
}

// unsubscribe stops watching doc.
func (s *Session) unsubscribe(doc string) {
	if _, ok := s.docs[doc]; ok {
		s.clearPresence(doc)
		s.hub.Unsubscribe(doc, s)
		delete(s.docs, doc)
		s.wire.unbind(doc)
	}
}

// sendPresence relays presence on a watched document. Presence data is
// shown through the session's view of the document, like its fields: keys
// naming hidden fields are left out, and nothing is sent on a document the
// session may not read.
func (s *Session) sendPresence(ctx context.Context, p core.Presence) error {
	st, ok := s.docs[p.Doc]
	if !ok || p.Session == s.opt.ID || st.view.Denied {
		return nil
	}
	return s.send.Send(ctx, protocol.Message{T: protocol.TPresence, Doc: p.Doc, Client: p.Client, By: p.Subject, Data: st.view.Data(p.Data), Del: p.Gone})
}

// catchUp brings st from version since to the stored version: deltas from
// the op log when it still holds them all, otherwise a snapshot.
func (s *Session) catchUp(ctx context.Context, st *docState, since int64) error {
	rules := s.opt.Policy.Rules(st.key.Collection)
	stored, err := s.backend.Load(ctx, st.key)
	if err != nil {
		return s.unknownView(ctx, st, rules, err)
	}
	cur := int64(0)
	if stored.Doc != nil {
		cur = stored.Doc.Version
	}
	var view collections.View
	if rules {
		view = s.opt.Policy.DocView(s.identity, st.key.Collection, stored.Doc)
	}
	switch {
	case cur == since && (!view.Denied || st.view.Key() == collections.DeniedView.Key()):
		st.last, st.view = cur, view
		return nil
	case !st.full && since > 0 && since < cur && stored.Doc.LogStart <= since+1 && !view.Denied:
		changes, err := s.backend.Changes(ctx, st.key, since+1, cur)
		if err != nil {
			return s.unknownView(ctx, st, rules, err)
		}
		// Deltas are shown through the current view, which is the view of
		// every version in between unless one of them changed a field the
		// rules read; then only a snapshot is right.
		if int64(len(changes)) == cur-since && !(s.opt.Policy.Touches(st.key.Collection, changes...)) {
			st.last, st.view = since, view
			for _, c := range changes {
				if err := s.deliver(ctx, st, c); err != nil {
					return err
				}
			}
			return nil
		}
	}
	// Too far behind (or ahead of what this store holds): start over from a
	// snapshot.
	return s.snapshot(ctx, st, stored.Doc, cur, view)
}

// unknownView reports err, a failed read of st's document, to the client.
// Under read rules the session's view of the document is then unknown:
// nothing of it is shown until a later change or refresh evaluates the
// rules again.
func (s *Session) unknownView(ctx context.Context, st *docState, rules bool, err error) error {
	if rules {
		st.view = collections.UnknownView
	}
	return s.sendErr(ctx, st.key.String(), err)
}

// snapshot sends document d (nil: none) at version cur as view shows it,
// and makes view the session's view of it. A denied view sends not_readable
// instead, once: the subscription stays, changes advance its version
// silently, and a snapshot follows when the document becomes readable.
func (s *Session) snapshot(ctx context.Context, st *docState, d *core.Document, cur int64, view collections.View) error {
	prev := st.view
	st.last, st.view = cur, view
	doc := st.key.String()
	if view.Denied {
		if prev.Key() == collections.DeniedView.Key() {
			return nil
		}
		// A reader that may no longer read the document is no longer
		// present on it: its presence is withdrawn, not refreshed.
		s.clearPresence(doc)
		m := withDoc(protocol.ErrorMessage(protocol.TError, core.Errorf(core.CodeNotReadable,
			"the read rules of %s hide this document from the caller from version %d on", st.key.Collection, cur)), doc)
		m.V = cur
		return s.send.Send(ctx, m)
	}
	msg := protocol.Message{T: protocol.TSnap, Doc: doc, V: cur}
	if d != nil {
		msg.Data, msg.Del = view.Data(d.Data()), d.Deleted
	}
	return s.send.Send(ctx, msg)
}

// reView evaluates the read rules again on the stored document (after the
// session's identity changed) and, when the session's view of it changed,
// sends it as the new view shows it.
func (s *Session) reView(ctx context.Context, st *docState) error {
	if !s.opt.Policy.Rules(st.key.Collection) {
		return nil
	}
	d, err := fullDocs.load(ctx, s.backend, st.key, st.key.String(), st.last)
	if err != nil {
		return s.unknownView(ctx, st, true, err)
	}
	v := st.last
	if d != nil {
		if d.Version < st.last {
			return nil
		}
		v = d.Version
	}
	view := s.opt.Policy.DocView(s.identity, st.key.Collection, d)
	if view.Key() == st.view.Key() {
		return nil // the same view: later versions arrive as deltas
	}
	return s.snapshot(ctx, st, d, v, view)
}

// viewNow is the identity's view of the stored document k, for answers
// about it (acks, refusals) outside the session's watched versions. A
// document that cannot be read counts as hidden.
func (s *Session) viewNow(ctx context.Context, k core.Key) collections.View {
	if !s.opt.Policy.Rules(k.Collection) {
		return collections.View{}
	}
	stored, err := s.backend.Load(ctx, k)
	if err != nil {
		return collections.DeniedView
	}
	return s.opt.Policy.DocView(s.identity, k.Collection, stored.Doc)
}

func (s *Session) op(ctx context.Context, m protocol.Message) error {
	k, err := core.ParseKey(m.Doc)
	if err == nil && m.Op == 0 {
		err = core.Errorf(core.CodeBadRequest, "op needs an op id (\"op\" > 0)")
	}
	if first, dup := s.pending[pendingOp{m.Doc, m.Op}]; err == nil && dup {
		if core.OpDigest(s.coreOp(first)) == core.OpDigest(s.coreOp(m)) {
			// A resend of an op still in flight: the first copy will be answered.
			<-s.inflight
			return nil
		}
		err = core.Errorf(core.CodeOpIDReused, "op id %d is in flight with other content", m.Op)
	}
	if err != nil {
		<-s.inflight
		r := protocol.ErrorMessage(protocol.TReject, err)
		r.Doc, r.Op = m.Doc, m.Op
		return s.send.Send(ctx, r)
	}
	s.pending[pendingOp{m.Doc, m.Op}] = m
	s.submit(k, s.coreOp(m), func(r engine.Result) { s.results <- &r }) // capacity is reserved by inflight
	return nil
}

// coreOp is the op a client's op message asks for.
func (s *Session) coreOp(m protocol.Message) core.Op {
	return core.Op{ClientID: s.client, OpID: m.Op, Base: m.Base, HLC: m.HLC, Ops: m.Ops, Delete: m.Del,
		Subject: s.identity.Subject, Roles: s.identity.Roles}
}

// result answers the client's own op once its outcome is known.
func (s *Session) result(ctx context.Context, r engine.Result) error {
	doc := r.Key.String()
	sent, ok := s.pending[pendingOp{doc, r.OpID}]
	if !ok {
		return nil // already acknowledged when its change was delivered
	}
	delete(s.pending, pendingOp{doc, r.OpID})
	switch {
	case r.Err != nil:
		msg := protocol.ErrorMessage(protocol.TReject, s.opt.Policy.RedactIn(s.identity, r.Key.Collection, s.viewNow(ctx, r.Key), r.Err))
		msg.Doc, msg.Op = doc, r.OpID
		return s.send.Send(ctx, msg)
	case r.Dup || r.Change == nil:
		return s.send.Send(ctx, protocol.Message{T: protocol.TAck, Doc: doc, Op: r.OpID, V: r.Version, Dup: true})
	}
	st, watched := s.docs[doc]
	if !watched || st.full {
		// Full subscriptions get the document itself when the change arrives.
		// The effective ops can quote the document (merged values,
		// conflict candidates); a writer who may not read it gets the
		// version only, and one who may read part of it that part.
		view := s.viewNow(ctx, r.Key)
		if !watched && s.opt.Policy.CanRead(s.identity, r.Key.Collection) != nil {
			view = collections.DeniedView
		}
		return s.send.Send(ctx, ack(*r.Change, sent, view))
	}
	if r.Version <= st.last {
		// Already covered by a snapshot the client received.
		return s.send.Send(ctx, ack(*r.Change, sent, st.view))
	}
	s.pending[pendingOp{doc, r.OpID}] = sent // deliver turns it into the ack, in order
	return s.ordered(ctx, st, *r.Change)
}

// change handles a live change from the hub.
func (s *Session) change(ctx context.Context, c core.Change) error {
	st, ok := s.docs[c.Doc]
	if !ok || c.Version <= st.last {
		return nil
	}
	if st.full {
		return s.pushFull(ctx, st, c)
	}
	return s.ordered(ctx, st, c)
}

// pushFull sends the whole current document instead of a delta (full
// subscriptions). The snapshot may already include later versions; their
// changes are then dropped as covered.
func (s *Session) pushFull(ctx context.Context, st *docState, c core.Change) error {
	d, err := fullDocs.load(ctx, s.backend, st.key, c.Doc, c.Version)
	if err != nil {
		return s.sendErr(ctx, c.Doc, err)
	}
	if d == nil || d.Version <= st.last {
		return nil
	}
	view := st.view
	if s.opt.Policy.Rules(st.key.Collection) {
		view = s.opt.Policy.DocView(s.identity, st.key.Collection, d)
	}
	err = s.snapshot(ctx, st, d, d.Version, view)
	if err == nil && s.opt.Delivered != nil {
		s.opt.Delivered(c)
	}
	return err
}

// ordered delivers c after pulling any versions between st.last and c from
// the op log.
func (s *Session) ordered(ctx context.Context, st *docState, c core.Change) error {
	if c.Version == st.last+1 && !c.Pull {
		return s.deliverLive(ctx, st, c)
	}
	upTo := c.Version - 1
	if c.Pull {
		upTo = c.Version
	}
	gap, err := s.backend.Changes(ctx, st.key, st.last+1, upTo)
	if err != nil {
		return s.sendErr(ctx, c.Doc, err)
	}
	if int64(len(gap)) != upTo-st.last {
		// The log no longer holds the gap: resend the document, which
		// includes c; if c is this session's op, it still needs its ack.
		if s.opt.Resynced != nil {
			s.opt.Resynced()
		}
		if err := s.catchUp(ctx, st, 0); err != nil {
			return err
		}
		return s.ackCovered(ctx, c)
	}
	if s.opt.GapRepaired != nil && len(gap) > 0 {
		s.opt.GapRepaired()
	}
	for _, g := range gap {
		if err := s.deliver(ctx, st, g); err != nil {
			return err
		}
	}
	if c.Pull {
		return nil
	}
	return s.deliverLive(ctx, st, c)
}

// deliverLive delivers a live change and reports it to the metrics hook.
func (s *Session) deliverLive(ctx context.Context, st *docState, c core.Change) error {
	err := s.deliver(ctx, st, c)
	if err == nil && s.opt.Delivered != nil {
		s.opt.Delivered(c)
	}
	return err
}

// ackCovered acknowledges c if it is this session's pending op whose
// version a snapshot already covered.
func (s *Session) ackCovered(ctx context.Context, c core.Change) error {
	key := pendingOp{c.Doc, c.OpID}
	if sent, ok := s.pending[key]; ok && c.Author == s.client && c.OpID != 0 {
		delete(s.pending, key)
		var view collections.View
		if st, ok := s.docs[c.Doc]; ok {
			view = st.view
		}
		return s.send.Send(ctx, ack(c, sent, view))
	}
	return nil
}

// deliver sends version st.last+1: as an ack if it is this session's own op
// still waiting for one, as a delta otherwise, shown through the session's
// view of the document. A change of a field the read rules look at is
// shown as a snapshot (or not_readable) when it changes that view; a change
// of hidden fields only is a delta without their ops; and on a document
// the session may not read, the version advances without a message.
func (s *Session) deliver(ctx context.Context, st *docState, c core.Change) error {
	if c.Version <= st.last {
		return s.ackCovered(ctx, c) // covered by a snapshot sent meanwhile
	}
	if st.view.Key() == collections.UnknownView.Key() || s.opt.Policy.Touches(st.key.Collection, c) {
		// The view after c is that of the stored document at c's version;
		// when the store is already further on, a snapshot of it covers c.
		d, err := fullDocs.load(ctx, s.backend, st.key, c.Doc, c.Version)
		if err != nil {
			return s.sendErr(ctx, c.Doc, err)
		}
		if d != nil && d.Version >= c.Version {
			if view := s.opt.Policy.DocView(s.identity, st.key.Collection, d); d.Version > c.Version || view.Key() != st.view.Key() {
				if err := s.snapshot(ctx, st, d, d.Version, view); err != nil {
					return err
				}
				return s.ackCovered(ctx, c)
			}
		}
	}
	st.last = c.Version
	if c.Author == s.client && c.OpID != 0 {
		key := pendingOp{c.Doc, c.OpID}
		if sent, ok := s.pending[key]; ok {
			delete(s.pending, key)
			return s.send.Send(ctx, ack(c, sent, st.view))
		}
	}
	if st.view.Denied {
		return nil
	}
	m := views.delta(s.backend, c, st.view)
	if c.Author == s.client && c.OpID != 0 {
		// The client's own op, sent before a reconnect: the op id lets it
		// settle the op (a delta names no op id otherwise).
		own := m.Msg
		own.Op = c.OpID
		return s.send.Send(ctx, own)
	}
	if ss, ok := s.send.(SharedSender); ok {
		return ss.SendShared(ctx, m)
	}
	return s.send.Send(ctx, m.Msg)
}

// ack acknowledges the client's op with its version; the effective ops ride
// along only when the merge changed what the client sent, and only as the
// writer's view of the document shows them (none when it may not read it).
func ack(c core.Change, sent protocol.Message, view collections.View) protocol.Message {
	m := protocol.Message{T: protocol.TAck, Doc: c.Doc, Op: c.OpID, V: c.Version, PV: c.Prev, HLC: c.HLC, New: c.Created, Del: c.Deleted}
	if view.Denied {
		return m
	}
	if !reflect.DeepEqual(c.Ops, sent.Ops) {
		m.Ops = view.Ops(c.Ops)
		if m.Ops == nil {
			m.Ops = []merge.FieldOp{}
		}
	}
	return m
}

// resync re-checks every watched document against the store after the
// session dropped live changes.
func (s *Session) resync(ctx context.Context) error {
	if s.opt.Resynced != nil {
		s.opt.Resynced()
	}
	// Drain what is queued; anything relevant is re-read from the log.
	s.drainEvents()
	for _, st := range s.docs {
		if err := s.Check(ctx, st.key.String()); err != nil {
			return err
		}
	}
	return nil
}

// Check compares one watched document with the store and delivers whatever
// the session missed (anti-entropy).
func (s *Session) Check(ctx context.Context, doc string) error {
	st, ok := s.docs[doc]
	if !ok {
		return nil
	}
	stored, err := s.backend.Load(ctx, st.key)
	if err != nil {
		return s.sendErr(ctx, doc, err)
	}
	if stored.Doc == nil || stored.Doc.Version <= st.last {
		return nil
	}
	if st.full {
		return s.catchUp(ctx, st, 0)
	}
	changes, err := s.backend.Changes(ctx, st.key, st.last+1, stored.Doc.Version)
	if err != nil {
		return s.sendErr(ctx, doc, err)
	}
	if int64(len(changes)) != stored.Doc.Version-st.last {
		return s.catchUp(ctx, st, 0) // pending acks follow with their results
	}
	for _, c := range changes {
		if err := s.deliver(ctx, st, c); err != nil {
			return err
		}
	}
	return nil
}

func (s *Session) sendErr(ctx context.Context, doc string, err error) error {
	return s.send.Send(ctx, withDoc(protocol.ErrorMessage(protocol.TError, err), doc))
}

func withDoc(m protocol.Message, doc string) protocol.Message {
	m.Doc = truncate(doc, 200)
	return m
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
