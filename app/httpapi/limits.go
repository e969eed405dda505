package httpapi

// Limits on what one client can hold open (docs/security.md): a deadline for
// reading each request body, a deadline for the WebSocket hello, and caps on
// the sync sessions (WebSocket, SSE, long-poll) open at once per client
// address and per identity.

import (
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/open-autoglm/autoglm/app/auth"
	"github.com/open-autoglm/autoglm/app/core"
)

// Defaults of the limits a zero Server field leaves unset.
const (
	defaultBodyTimeout  = 30 * time.Second
	defaultHelloTimeout = 5 * time.Second
)

// connCounts counts open sessions per key (client address or subject).
type connCounts struct {
	mu sync.Mutex
	n  map[string]int
}

// acquire takes one of limit slots of key (limit <= 0: no cap); ok is false
// when all are taken. release gives the slot back (once).
func (c *connCounts) acquire(key string, limit int) (release func(), ok bool) {
	if limit <= 0 {
		return func() {}, true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[string]int{}
	}
	if c.n[key] >= limit {
		return nil, false
	}
	c.n[key]++
	var once sync.Once
	return func() {
		once.Do(func() {
			c.mu.Lock()
			defer c.mu.Unlock()
			if c.n[key]--; c.n[key] <= 0 {
				delete(c.n, key)
			}
		})
	}, true
}

// clientAddr is the address a request counts against: the last entry of
// the configured proxy header when the request has it, otherwise the peer's
// IP. The header is trusted only when configured; by default none is.
func (s *Server) clientAddr(r *http.Request) string {
	if h := s.ClientAddrHeader; h != "" {
		if vs := r.Header.Values(h); len(vs) > 0 {
			v := vs[len(vs)-1]
			if i := strings.LastIndexByte(v, ','); i >= 0 {
				v = v[i+1:]
			}
			if v = strings.TrimSpace(v); v != "" {
				return v
			}
		}
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// admitAddr takes a session slot of the request's client address; over the
// cap the request is refused with 429 rate_limited before anything opens.
func (s *Server) admitAddr(r *http.Request) (release func(), err error) {
	release, ok := s.addrConns.acquire(s.clientAddr(r), s.MaxConnsPerAddr)
	if !ok {
		return nil, core.Errorf(core.CodeRateLimited, "more than %d open connections from this address", s.MaxConnsPerAddr)
	}
	return release, nil
}

// admitIdentity takes a session slot of an authenticated identity (the
// token's subject); sessions check it after hello and close with 4004 when
// the identity already holds its cap. Anonymous callers are capped by
// address only.
func (s *Server) admitIdentity(id auth.Identity) (release func(), err error) {
	if id.Anonymous {
		return func() {}, nil
	}
	release, ok := s.idConns.acquire(id.Subject, s.MaxConnsPerIdentity)
	if !ok {
		return nil, core.Errorf(core.CodeRateLimited, "more than %d open connections for this identity", s.MaxConnsPerIdentity)
	}
	return release, nil
}

func (s *Server) helloTimeout() time.Duration {
	if s.HelloTimeout > 0 {
		return s.HelloTimeout
	}
	return defaultHelloTimeout
}

// errBodyTimeout is what reading a body returns once its deadline passed.
var errBodyTimeout = core.Errorf(core.CodeRequestTimeout, "the request body did not arrive in time")

// bodyDeadline bounds the time to read the request body: a client that
// declares a body and trickles it is answered 408 request_timeout and
// disconnected once BodyTimeout has passed, whatever the handler. The
// deadline is on the connection's reads and is lifted as soon as the body has
// been read, so handlers that then wait (long-poll) are not cut off; upgrades
// and bodiless requests (WebSocket, the SSE stream, polls) get none. finish,
// called after the handler, answers 408 if the handler returned without
// answering after the deadline passed.
func (s *Server) bodyDeadline(w http.ResponseWriter, r *http.Request) (_ http.ResponseWriter, finish func()) {
	if r.Body == nil || r.Body == http.NoBody || r.Header.Get("Upgrade") != "" {
		return w, func() {}
	}
	d := s.BodyTimeout
	if d <= 0 {
		d = defaultBodyTimeout
	}
	rc := http.NewResponseController(w)
	if rc.SetReadDeadline(time.Now().Add(d)) != nil {
		return w, func() {}
	}
	b := &timedBody{ReadCloser: r.Body, rc: rc}
	r.Body = b
	tw := &timedWriter{ResponseWriter: w, body: b, s: s, r: r}
	return tw, func() { tw.swap() }
}

// timedBody is a request body read under a deadline.
type timedBody struct {
	io.ReadCloser
	rc      *http.ResponseController
	expired atomic.Bool
	done    bool
}

func (b *timedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	switch {
	case err == io.EOF && !b.done:
		b.done = true
		_ = b.rc.SetReadDeadline(time.Time{})
	case err != nil && errors.Is(err, os.ErrDeadlineExceeded):
		b.expired.Store(true)
		err = errBodyTimeout
	}
	return n, err
}

// timedWriter answers 408 request_timeout in place of whatever the handler
// answers once the body's deadline has passed, so the code is the same on
// every route.
type timedWriter struct {
	http.ResponseWriter
	body    *timedBody
	s       *Server
	r       *http.Request
	wrote   bool
	swapped bool
}

func (w *timedWriter) swap() bool {
	if w.swapped || (!w.wrote && w.body.expired.Load()) {
		if !w.swapped {
			w.swapped, w.wrote = true, true
			w.ResponseWriter.Header().Set("Connection", "close")
			writeError(w.ResponseWriter, w.s.Log, w.r, errBodyTimeout)
		}
		return true
	}
	return false
}

func (w *timedWriter) WriteHeader(code int) {
	if !w.swap() {
		w.wrote = true
		w.ResponseWriter.WriteHeader(code)
	}
}

func (w *timedWriter) Write(b []byte) (int, error) {
	if w.swap() {
		return len(b), nil
	}
	w.wrote = true
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection.
func (w *timedWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
