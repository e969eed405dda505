// Package httpapi serves the service over HTTP: the REST document API, the
// WebSocket sync endpoint, health and version endpoints, and the callbacks
// daprd makes (subscriptions). Errors are mapped to statuses in one place
// (errors.go).
package httpapi

import (
	"context"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/sirupsen/logrus"

	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/engine"
	"github.com/open-autoglm/autoglm/app/hub"
	"github.com/open-autoglm/autoglm/app/protocol"
	"github.com/open-autoglm/autoglm/app/query/live"
	"github.com/open-autoglm/autoglm/app/session"
)

// Server holds what the handlers need. Fill the exported fields, then call
// Handler.
type Server struct {
	Engine *engine.Engine
	Lister core.Lister
	Hub    *hub.Hub
	// Dapr serves daprd's calls under /dapr/ (subscriptions and their
	// deliveries); nil serves none.
	Dapr    http.Handler
	Log     logrus.FieldLogger
	Version string
	Node    string
	Ready   func() bool

	MaxBody        int64
	Heartbeat      time.Duration
	SessionQueue   int
	MaxSubs        int
	AllowedOrigins []string
	// WriteTimeout bounds one WebSocket write; a client that does not read
	// for this long is dropped as a slow consumer.
	WriteTimeout time.Duration
	// HelloRoles lets clients claim roles in hello (no authentication).
	HelloRoles bool
	// Access is authentication, authorization and rate limiting.
	Access Access
	// Metrics hooks; nil ones are ignored.
	Metrics Metrics
	// Extra are more API routes (tasks, webhooks).
	Extra []Route
	// Queries is the live query engine (REST queries and live queries);
	// nil: queries are refused as unavailable.
	Queries *live.Engine
	// StoreQueries, when set, runs REST queries through the state store's
	// query engine where it can (query.go); the others use Queries.
	StoreQueries StoreQuerier

	// Connection limits (limits.go). BodyTimeout bounds reading one request
	// body (408 request_timeout); HelloTimeout closes an upgraded WebSocket
	// that has not sent hello (4006). MaxConnsPerAddr and
	// MaxConnsPerIdentity cap the sync sessions open at once per client
	// address and per token subject (0: no cap); ClientAddrHeader names the
	// header a trusted proxy puts the client address in (empty: the peer
	// address is used).
	BodyTimeout         time.Duration
	HelloTimeout        time.Duration
	MaxConnsPerAddr     int
	MaxConnsPerIdentity int
	ClientAddrHeader    string
	addrConns, idConns  connCounts

	sessionsMu sync.Mutex
	sessions   map[*liveSession]struct{}
	sessionsWG sync.WaitGroup
	draining   atomic.Bool
	nextID     atomic.Uint64
}

// Handler returns the HTTP handler with every route.
func (s *Server) Handler() http.Handler {
	if s.MaxBody <= 0 {
		s.MaxBody = 1 << 20
	}
	if s.WriteTimeout <= 0 {
		s.WriteTimeout = 10 * time.Second
	}
	if s.Access.table == nil {
		s.Access.table = &limiterTable{}
	}
	mux := newRouteMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("/readyz", s.serveReady)
	mux.HandleFunc("/version", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"version": s.Version, "node": s.Node})
	})
	mux.HandleFunc(protocol.PathDocs+"/{coll}/{id}", s.serveDoc)
	mux.HandleFunc(protocol.PathDocs+"/{coll}/{id}/changes", s.serveChanges)
	mux.HandleFunc(protocol.PathDocs+"/{coll}", s.serveList)
	mux.HandleFunc("POST "+protocol.PathDocs+"/{coll}/query", s.serveQuery)
	mux.HandleFunc(protocol.PathSync, s.serveWS)
	fb := s.fallbackTransports() // SSE + POST and long-poll (sse.go, longpoll.go)
	mux.HandleFunc(protocol.PathEvents, fb.serveEvents)
	mux.HandleFunc(protocol.PathEvents+"/{session}", fb.servePost)
	mux.HandleFunc(protocol.PathPoll, fb.serveOpen)
	mux.HandleFunc(protocol.PathPoll+"/{session}", fb.servePollSession)
	s.registerWeb(mux) // JS client and demo page (web.go)
	if s.Metrics.Handler != nil {
		mux.Handle("GET /metrics", s.Metrics.Handler)
	}
	if s.Dapr != nil {
		mux.Handle("/dapr/", s.Dapr)
	}
	for _, rt := range s.Extra {
		mux.HandleFunc(rt.Pattern, s.serveRoute(rt))
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.fail(w, r, core.Errorf(core.CodeNotFound, "no route %s", r.URL.Path))
	})
	return s.common(s.observe(mux))
}

// Route is an API route of another package (background tasks, webhooks),
// served with this server's authentication, rate limits and error mapping.
type Route struct {
	Pattern string // ServeMux pattern, e.g. "POST /v1/webhooks"
	// Admin routes need the admin role while authentication is on.
	Admin  bool
	Handle func(r *http.Request) (status int, body any, err error)
}

func (s *Server) serveRoute(rt Route) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, err := s.identify(r)
		if err == nil && rt.Admin && s.Access.Verifier != nil && !id.HasRole("admin") {
			err = core.Errorf(core.CodeForbidden, "this route needs the admin role")
		}
		if err != nil {
			s.fail(w, r, err)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, s.MaxBody)
		status, body, err := rt.Handle(r)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		writeJSON(w, status, body)
	}
}

// Metrics are the observability hooks of the HTTP layer.
type Metrics struct {
	// Connection counts a client connection of a transport ("ws", "sse",
	// "longpoll") opening (+1) and closing (-1).
	Connection func(transport string, delta int)
	// Session adds metric hooks to each new session's options.
	Session func(*session.Options)
	// Handler serves GET /metrics.
	Handler http.Handler
	// Requests wraps the routes to measure requests; routes are the
	// registered patterns (observe.go).
	Requests func(next http.Handler, routes []string) http.Handler
	// Trace wraps every route in request tracing.
	Trace func(next http.Handler) http.Handler
}

func (m Metrics) conn(transport string, delta int) {
	if m.Connection != nil {
		m.Connection(transport, delta)
	}
}

// common adds the version header every response carries (so a canary split
// is visible), bounds the time to read the request body, and recovers from
// handler panics.
func (s *Server) common(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Autoglm-Version", s.Version)
		w, finish := s.bodyDeadline(w, r)
		defer finish()
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				s.Log.WithField("panic", v).WithField("path", r.URL.Path).Error("handler panic")
				writeError(w, s.Log, r, core.Errorf(core.CodeInternal, "internal error"))
			}
		}()
		next.ServeHTTP(w, r)
	})
}

func (s *Server) serveReady(w http.ResponseWriter, r *http.Request) {
	switch {
	case s.draining.Load():
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "draining"})
	case s.Ready != nil && !s.Ready():
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "sidecar not ready"})
	default:
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	}
}

func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	writeError(w, s.Log, r, err)
}

// Drain stops taking new sessions, closes the open ones with the
// "shutting down" code (clients reconnect to another replica and resume) and
// waits for them to end or ctx to expire.
func (s *Server) Drain(ctx context.Context) {
	s.draining.Store(true)
	s.sessionsMu.Lock()
	for ls := range s.sessions {
		ls.cancel()
	}
	s.sessionsMu.Unlock()
	done := make(chan struct{})
	go func() { s.sessionsWG.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
}

// Sessions returns the number of open sync sessions.
func (s *Server) Sessions() int {
	s.sessionsMu.Lock()
	defer s.sessionsMu.Unlock()
	return len(s.sessions)
}

// sessionOptions are the options every sync transport gives its sessions.
func (s *Server) sessionOptions(id string) session.Options {
	o := session.Options{
		ID: id, Node: s.Node, Heartbeat: s.Heartbeat, Queue: s.SessionQueue,
		MaxSubs: s.MaxSubs, NewClientID: uuid.NewString, Admit: s.admitIdentity, Queries: s.Queries,
	}
	if s.Metrics.Session != nil {
		s.Metrics.Session(&o)
	}
	s.applyAccess(&o)
	return o
}

// track registers a live session of transport so Drain can end it with
// cancel, and counts the connection; the returned func undoes both.
func (s *Server) track(cancel context.CancelFunc, transport string) (untrack func()) {
	ls := &liveSession{cancel: cancel}
	s.sessionsMu.Lock()
	if s.sessions == nil {
		s.sessions = map[*liveSession]struct{}{}
	}
	s.sessions[ls] = struct{}{}
	s.sessionsWG.Add(1)
	s.sessionsMu.Unlock()
	s.Metrics.conn(transport, 1)
	return func() {
		s.Metrics.conn(transport, -1)
		s.sessionsMu.Lock()
		delete(s.sessions, ls)
		s.sessionsMu.Unlock()
		s.sessionsWG.Done()
	}
}

func (s *Server) newSessionID() string {
	return s.Node + "-" + strconv.FormatUint(s.nextID.Add(1), 36)
}
