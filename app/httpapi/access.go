package httpapi

import (
	"net/http"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/open-autoglm/autoglm/app/auth"
	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/session"
)

// Access holds authentication, authorization and rate limits for every
// transport.
type Access struct {
	// Verifier checks bearer tokens; nil means authentication is off.
	Verifier auth.Verifier
	Policy   auth.Policy
	// ConnRate / ConnBurst limit messages per sync connection.
	ConnRate  rate.Limit
	ConnBurst int
	// IdentityRate / IdentityBurst limit REST requests per identity (per
	// client address while authentication is off).
	IdentityRate  rate.Limit
	IdentityBurst int

	table *limiterTable // set by Handler
}

type limiterTable struct {
	mu       sync.Mutex
	limiters map[string]*identityLimiter
}

type identityLimiter struct {
	lim  *rate.Limiter
	seen time.Time
}

// maxLimiters bounds the per-identity limiter table; idle entries are
// dropped first.
const maxLimiters = 100_000

// identify authenticates a request. Tokens come in the Authorization header
// or, for EventSource and WebSocket clients that cannot set headers, in the
// access_token query parameter.
func (s *Server) identify(r *http.Request) (auth.Identity, error) {
	if s.Access.Verifier == nil {
		id := auth.Identity{Subject: "anonymous", Anonymous: true}
		if s.HelloRoles {
			// Without authentication a caller may act in a role it names
			// (development and demos); with it, roles come from the token.
			for _, role := range strings.Split(r.Header.Get("X-Roles"), ",") {
				if role = strings.TrimSpace(role); role != "" {
					id.Roles = append(id.Roles, role)
				}
			}
		}
		return id, s.allow(id, r)
	}
	id, err := s.Access.Verifier.Verify(r.Context(), requestToken(r))
	if err != nil {
		return id, err
	}
	return id, s.allow(id, r)
}

// requestToken is the bearer token of a request: the Authorization header,
// else the access_token query parameter.
func requestToken(r *http.Request) string {
	if token := auth.BearerToken(r.Header.Get("Authorization")); token != "" {
		return token
	}
	return r.URL.Query().Get("access_token")
}

// allow applies the per-identity rate limit.
func (s *Server) allow(id auth.Identity, r *http.Request) error {
	a := &s.Access
	if a.IdentityRate <= 0 || a.table == nil {
		return nil
	}
	key := "sub:" + id.Subject
	if id.Anonymous {
		key = "addr:" + s.clientAddr(r)
	}
	now := time.Now()
	t := a.table
	t.mu.Lock()
	if t.limiters == nil {
		t.limiters = map[string]*identityLimiter{}
	}
	l, ok := t.limiters[key]
	if !ok {
		if len(t.limiters) >= maxLimiters {
			for k, v := range t.limiters {
				if now.Sub(v.seen) > time.Minute {
					delete(t.limiters, k)
				}
			}
		}
		l = &identityLimiter{lim: rate.NewLimiter(a.IdentityRate, max(a.IdentityBurst, 1))}
		t.limiters[key] = l
	}
	l.seen = now
	t.mu.Unlock()
	if !l.lim.Allow() {
		return core.Errorf(core.CodeRateLimited, "more than %g requests per second", float64(a.IdentityRate))
	}
	return nil
}

// applyAccess gives a sync session the server's authentication, read policy
// and per-connection rate limit.
func (s *Server) applyAccess(o *session.Options) {
	if v := s.Access.Verifier; v != nil {
		o.Authenticate = v.Verify
	}
	o.Policy = s.Access.Policy
	o.Rate, o.Burst = s.Access.ConnRate, s.Access.ConnBurst
	o.HelloRoles = s.HelloRoles && s.Access.Verifier == nil
}
