package httpapi

// Fallback transports for clients that cannot open a WebSocket (proxies that
// strip Upgrade, locked-down networks): Server-Sent Events for
// server→client plus HTTP POST for client→server, and long-polling. Both
// drive the same transport-independent session.Session as the WebSocket
// endpoint, so sync semantics, resume (sub with since, ops resent with their
// original ids) and close codes are identical. docs/client.md ("Transports")
// describes the wire side.

import (
	"context"
	"encoding/json"
	"errors"
	"github.com/sirupsen/logrus"
	"io"
	"mime"
	"net/http"
	"net/url"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/protocol"
	"github.com/open-autoglm/autoglm/app/session"
)

// maxHelloQuery bounds the hello message carried in the SSE URL.
const maxHelloQuery = 8 << 10

// sseComment is how often an idle event stream carries a comment line, so
// proxies and load balancers do not time it out between pings.
var sseComment = 10 * time.Second

// fallback is the registry of SSE and long-poll sessions of one handler:
// their ids are what later POSTs and polls name.
type fallback struct {
	s *Server
	// pollWait bounds one long-poll request; idle ends a long-poll session
	// nobody polls.
	pollWait time.Duration
	idle     time.Duration

	mu       sync.Mutex
	sessions map[string]*fbSession
	hooked   sync.Once
}

// fbSession is one SSE or long-poll session.
type fbSession struct {
	id   string
	sess *session.Session
	// ended is cancelled once Run has returned; stop ends the session
	// (shutdown, client gone).
	ended context.Context
	stop  context.CancelFunc
	// run serves the session until it ends (once).
	run  func() session.Close
	poll *pollBuffer // long-poll only
	// owner is the subject whose token opened the session (authentication
	// on; empty when that token was refused). Every later request must
	// carry credentials of this subject: the session id alone grants
	// nothing.
	owner string
}

func (s *Server) fallbackTransports() *fallback {
	return &fallback{
		s: s, pollWait: 25 * time.Second, idle: max(3*s.heartbeat(), 15*time.Second),
		sessions: map[string]*fbSession{},
	}
}

func (s *Server) heartbeat() time.Duration {
	if s.Heartbeat > 0 {
		return s.Heartbeat
	}
	return 15 * time.Second
}

// open creates and registers a session and feeds it the hello; the caller
// serves it with fs.run (SSE on the request's goroutine, long-poll in the
// background).
func (fb *fallback) open(r *http.Request, transport string, hello protocol.Message, send session.Sender, poll *pollBuffer) *fbSession {
	s := fb.s
	fb.hookShutdown(r)
	runCtx, stop := context.WithCancel(context.Background())
	ended, markEnded := context.WithCancel(context.Background())
	fs := &fbSession{id: uuid.NewString(), ended: ended, stop: stop, poll: poll}
	if hello.Token == "" {
		// EventSource cannot send a header: the request's own credentials
		// (access_token in the query) stand in for a token in hello.
		hello.Token = requestToken(r)
	}
	if v := s.Access.Verifier; v != nil {
		// A refused token leaves no owner; the session itself closes with
		// 4501 when it reads the hello.
		if id, err := v.Verify(r.Context(), hello.Token); err == nil {
			fs.owner = id.Subject
		}
	}
	fs.sess = session.New(s.sessionOptions(fs.id), s.Engine, s.Hub, send)
	untrack := s.track(stop, transport)

	fb.mu.Lock()
	fb.sessions[fs.id] = fs
	fb.mu.Unlock()

	go fs.sess.Receive(ended, hello)
	fs.run = func() session.Close {
		defer func() {
			markEnded()
			stop()
			untrack()
		}()
		return fs.sess.Run(runCtx)
	}
	return fs
}

// forget removes a session from the registry.
func (fb *fallback) forget(fs *fbSession) {
	fb.mu.Lock()
	delete(fb.sessions, fs.id)
	fb.mu.Unlock()
}

func (fb *fallback) lookup(id string) *fbSession {
	fb.mu.Lock()
	defer fb.mu.Unlock()
	return fb.sessions[id]
}

// session finds the session a request names and checks that the request
// comes from the identity that opened it: with authentication on, a request
// without valid credentials is 401 unauthorized and one of another subject
// 403 forbidden. It answers the request itself and returns nil on failure.
func (fb *fallback) session(w http.ResponseWriter, r *http.Request) *fbSession {
	s := fb.s
	var caller string
	if v := s.Access.Verifier; v != nil {
		id, err := v.Verify(r.Context(), requestToken(r))
		if err != nil {
			s.fail(w, r, err)
			return nil
		}
		caller = id.Subject
	}
	fs := fb.lookup(r.PathValue("session"))
	if fs == nil {
		s.fail(w, r, core.Errorf(core.CodeNotFound, "no such session (it ended or never existed); reconnect"))
		return nil
	}
	if s.Access.Verifier != nil && (fs.owner == "" || caller != fs.owner) {
		s.fail(w, r, core.Errorf(core.CodeForbidden, "the session belongs to another identity"))
		return nil
	}
	return fs
}

// hookShutdown ends every fallback session when the HTTP server shuts down:
// an open event stream is an active request, and http.Server.Shutdown would
// otherwise wait for it until its deadline.
func (fb *fallback) hookShutdown(r *http.Request) {
	hs, ok := r.Context().Value(http.ServerContextKey).(*http.Server)
	if !ok {
		return
	}
	fb.hooked.Do(func() {
		hs.RegisterOnShutdown(func() {
			fb.mu.Lock()
			defer fb.mu.Unlock()
			for _, fs := range fb.sessions {
				fs.stop()
			}
		})
	})
}

// serveEvents is GET /v1/events?hello=<hello message as JSON>: it opens a
// session and streams every message to the client as one "data:" line of
// JSON. The stream's last event is "close" with the session's close code.
func (fb *fallback) serveEvents(w http.ResponseWriter, r *http.Request) {
	s := fb.s
	hello, release, ok := fb.admitOpen(w, r, http.MethodGet, "%s is not served on the event stream", func() ([]byte, bool) {
		raw := r.URL.Query().Get("hello")
		if len(raw) > maxHelloQuery {
			s.fail(w, r, core.Errorf(core.CodeTooLarge, "hello over %d bytes", maxHelloQuery))
			return nil, false
		}
		return []byte(raw), true
	})
	if !ok {
		return
	}
	defer release()
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	w.WriteHeader(http.StatusOK)
	if err := rc.Flush(); err != nil {
		return // the connection cannot stream
	}
	send := &sseSender{w: w, rc: rc, timeout: s.WriteTimeout}
	fs := fb.open(r, "sse", hello, send, nil)
	defer fb.forget(fs)

	// The client going away, or comment heartbeats failing, ends the session.
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(sseComment)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-r.Context().Done():
				fs.stop()
				return
			case <-t.C:
				if send.write([]byte(": keep-alive\n\n")) != nil {
					fs.stop()
					return
				}
			}
		}
	}()
	c := fs.run()
	close(done)
	wg.Wait()
	b, _ := json.Marshal(closeInfo{Code: c.Code, Reason: c.Reason})
	_ = send.write(append(append([]byte("event: close\ndata: "), b...), "\n\n"...))
}

// closeInfo is how the fallback transports report the end of a session:
// the WebSocket close code and reason the session ended with.
type closeInfo struct {
	Code   int    `json:"code"`
	Reason string `json:"reason,omitempty"`
}

// sseSender writes one event per message and flushes it, with a deadline.
type sseSender struct {
	mu      sync.Mutex
	w       io.Writer
	rc      *http.ResponseController
	timeout time.Duration
}

func (ss *sseSender) Send(ctx context.Context, m protocol.Message) error {
	return ss.event(protocol.Encode(m))
}

// SendShared writes a message shared with other connections, encoded once.
func (ss *sseSender) SendShared(ctx context.Context, m *protocol.Shared) error {
	return ss.event(m.JSON())
}

// event writes an encoded message as one event.
func (ss *sseSender) event(b []byte, err error) error {
	if err != nil {
		return err
	}
	return ss.write(append(append([]byte("data: "), b...), "\n\n"...))
}

func (ss *sseSender) write(b []byte) error {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	_ = ss.rc.SetWriteDeadline(time.Now().Add(ss.timeout))
	if _, err := ss.w.Write(b); err != nil {
		return err
	}
	return ss.rc.Flush()
}

// admitOpen runs, in order, the checks a request that opens a fallback
// session passes: the origin, the method (notServed is the refusal's
// message, with the method for %s), the service not draining, the hello
// message that readHello returns, and a connection slot for the client's
// address. When one fails, the request has been answered and ok is false;
// otherwise release gives the slot back.
func (fb *fallback) admitOpen(w http.ResponseWriter, r *http.Request, method, notServed string, readHello func() ([]byte, bool)) (hello protocol.Message, release func(), ok bool) {
	s := fb.s
	if !s.corsOK(w, r) || !s.methodIs(w, r, method, method+", OPTIONS", notServed) {
		return hello, nil, false
	}
	if s.draining.Load() {
		s.fail(w, r, core.ErrShuttingDown)
		return hello, nil, false
	}
	raw, ok := readHello()
	if !ok {
		return hello, nil, false
	}
	hello, err := decodeHello(raw)
	if err == nil {
		release, err = s.admitAddr(r)
	}
	if err != nil {
		s.fail(w, r, err)
		return hello, nil, false
	}
	return hello, release, true
}

// methodIs answers 405 with allow as the Allow header and notServed (the
// method for %s) as the message unless r's method is method.
func (s *Server) methodIs(w http.ResponseWriter, r *http.Request, method, allow, notServed string) bool {
	if r.Method == method {
		return true
	}
	w.Header().Set("Allow", allow)
	s.fail(w, r, core.Errorf(core.CodeMethodNotAllowed, notServed, r.Method))
	return false
}

// decodeHello reads the hello message that opens a fallback session.
func decodeHello(b []byte) (protocol.Message, error) {
	if len(b) == 0 {
		return protocol.Message{}, core.Errorf(core.CodeBadRequest, "a hello message is required")
	}
	m, err := protocol.Decode(b)
	if err != nil {
		return protocol.Message{}, err
	}
	if m.T != protocol.THello {
		return protocol.Message{}, core.Errorf(core.CodeBadRequest, "the first message must be hello, not %.32q", m.T)
	}
	return m, nil
}

// servePost is POST /v1/events/{session} and POST /v1/poll/{session}: a JSON
// array of client messages for the session, answered 204 once the session
// has taken them all (backpressure is the request's latency).
func (fb *fallback) servePost(w http.ResponseWriter, r *http.Request) {
	s := fb.s
	if !s.corsOK(w, r) || !s.methodIs(w, r, http.MethodPost, "POST, OPTIONS", "%s is not served here; POST messages") {
		return
	}
	fs := fb.session(w, r)
	if fs == nil {
		return
	}
	body, ok := s.readJSONBody(w, r)
	if !ok {
		return
	}
	var raws []json.RawMessage
	if err := json.Unmarshal(body, &raws); err != nil {
		s.fail(w, r, core.Errorf(core.CodeBadRequest, "body must be a JSON array of messages"))
		return
	}
	msgs := make([]protocol.Message, 0, len(raws))
	for _, raw := range raws {
		m, err := protocol.Decode(raw)
		if err != nil {
			// As on a WebSocket, a malformed message ends the session.
			fs.sess.Fail(protocol.CloseProtocolError, "malformed message")
			s.fail(w, r, err)
			return
		}
		msgs = append(msgs, m)
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	defer context.AfterFunc(fs.ended, cancel)()
	for _, m := range msgs {
		if !fs.sess.Receive(ctx, m) {
			if r.Context().Err() == nil {
				s.fail(w, r, core.Errorf(core.CodeNotFound, "the session has ended; reconnect"))
			}
			return
		}
	}
	w.WriteHeader(http.StatusNoContent)
}

// readJSONBody reads a JSON request body of at most MaxBody bytes.
func (s *Server) readJSONBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		s.fail(w, r, core.Errorf(core.CodeUnsupportedMedia, "body must be application/json"))
		return nil, false
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.MaxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			s.fail(w, r, core.Errorf(core.CodeTooLarge, "body over %d bytes", s.MaxBody))
		} else {
			s.fail(w, r, core.Errorf(core.CodeBadRequest, "reading body: %v", err))
		}
		return nil, false
	}
	return body, true
}

// corsOK applies the origin policy of the WebSocket endpoint to the
// fallback transports (same host, AllowedOrigins patterns, or "*"), adds the
// CORS headers an allowed cross-origin browser needs and answers preflights.
// It returns false when the request has been answered.
func (s *Server) corsOK(w http.ResponseWriter, r *http.Request) bool {
	if s.refuseOrigin(w, r) {
		return false
	}
	if origin := r.Header.Get("Origin"); origin != "" {
		h := w.Header()
		h.Set("Access-Control-Allow-Origin", origin)
		h.Add("Vary", "Origin")
	}
	if r.Method == http.MethodOptions {
		h := w.Header()
		h.Set("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
		h.Set("Access-Control-Allow-Headers", "Content-Type, Authorization, Traceparent")
		h.Set("Access-Control-Max-Age", "600")
		w.WriteHeader(http.StatusNoContent)
		return false
	}
	return true
}

// refuseOrigin answers a request from an origin the policy does not allow
// (403 forbidden, details.origin) and logs why; it reports whether it did.
// The refusal itself carries CORS headers so the refused page can read the
// reason instead of seeing an opaque network error.
func (s *Server) refuseOrigin(w http.ResponseWriter, r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" || s.originAllowed(origin, r.Host) {
		return false
	}
	s.Log.WithFields(logrus.Fields{"origin": origin, "host": r.Host, "path": r.URL.Path}).
		Warn("cross-origin request refused: the origin is neither this host nor in AUTOGLM_ALLOWED_ORIGINS")
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", origin)
	h.Add("Vary", "Origin")
	err := core.Errorf(core.CodeForbidden, "origin %.100q is not allowed (AUTOGLM_ALLOWED_ORIGINS)", origin)
	err.Details = map[string]string{"origin": origin}
	s.fail(w, r, err)
	return true
}

func (s *Server) originAllowed(origin, host string) bool {
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false
	}
	if strings.EqualFold(u.Host, host) {
		return true
	}
	for _, p := range originHosts(s.AllowedOrigins) {
		if p == "*" {
			return true
		}
		if ok, _ := path.Match(strings.ToLower(p), strings.ToLower(u.Host)); ok {
			return true
		}
	}
	return false
}
