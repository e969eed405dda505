// Package webhooks POSTs the changes of a collection to external URLs.
//
// Endpoints come from the collections file (per collection, with the
// signing secret in an environment variable) or from the API
// (POST /v1/webhooks). Every committed change of the collection becomes a
// delivery: a JSON change summary signed with HMAC-SHA256 over
// "<unix seconds>.<body>" (header Autoglm-Signature: t=<ts>,v1=<hex>), the
// same scheme as Stripe's. docs/events.md has the exact format.
//
// Deliveries run as background tasks (package tasks), so they survive a
// restart and run on one replica. Per endpoint and document they are
// strictly ordered: a delivery task does not carry the change, it asks to
// bring the endpoint's cursor for that document up to a version, and sends
// the missing versions from the op log, oldest first, advancing the cursor
// (a compare-and-swap record in the state store) after each success. A
// failure parks the document: the cursor records the attempt count and the
// time of the next try (exponential backoff with full jitter), the document
// goes on the endpoint's retry list, and a loop on every replica re-queues
// documents whose time has come. Nothing holds a worker or a daprd delivery
// while waiting. Later changes of a parked document wait behind it. After
// MaxAttempts the versions still pending are dead-lettered (listed by
// GET /v1/webhooks/dead, sent again by POST /v1/webhooks/dead/{id}/replay)
// and the cursor moves past them.
//
// A circuit breaker per endpoint (sony/gobreaker) stops calling an endpoint
// after Breaker.Failures consecutive failures. While it is open, deliveries
// are parked without calling the endpoint and without spending an attempt;
// after Breaker.Open one probe goes through (a real attempt), and its
// success closes the breaker.
package webhooks

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"maps"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/open-autoglm/autoglm/app/collections"
	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/internal/keylock"
	"github.com/open-autoglm/autoglm/app/internal/logs"
	"github.com/open-autoglm/autoglm/app/kv"
	"github.com/open-autoglm/autoglm/app/tasks"
)

// deliveryTimeout bounds one delivery request (docs/events.md: answer
// within 10 s).
const deliveryTimeout = 10 * time.Second

// Task kinds.
const (
	KindDeliver = "webhook.deliver"
	KindReplay  = "webhook.replay"
)

// Endpoint is one webhook subscription: the changes of Collection go to URL.
type Endpoint struct {
	ID         string    `json:"id"`
	Collection string    `json:"collection"`
	URL        string    `json:"url"`
	Secret     string    `json:"secret,omitempty"`
	Source     string    `json:"source"` // "config" or "api"
	Created    time.Time `json:"created,omitzero"`
}

// Breaker configures the per-endpoint circuit breaker.
type Breaker struct {
	Failures int           // consecutive failures that open it (default 5)
	Open     time.Duration // how long it stays open before a probe (default 30s)
}

// Options configure the webhooks.
type Options struct {
	// State keeps the endpoint registry, the delivery cursors, the retry
	// lists and the dead letters.
	State kv.Records
	Tasks *tasks.Queue
	// Changes reads logged changes from..to of a document (the engine).
	Changes func(ctx context.Context, k core.Key, from, to int64) ([]core.Change, error)
	// Integrations declare the endpoints of the collections file.
	Integrations collections.Integrations
	// Getenv reads the secrets of configured endpoints (os.Getenv).
	Getenv func(string) string
	// Filter is applied to every change before it is sent; it may strip
	// ops the endpoint's readers may not see, or return false to skip the
	// change (the cursor still moves past it). Nil sends changes as they
	// are.
	Filter func(e Endpoint, c core.Change) (core.Change, bool)
	// Targets decides which addresses deliveries may reach, at
	// registration and on every connection (default: NewGuard with no
	// allow-list and no protected ports).
	Targets *Guard
	// RegistrationClosed, when set, is why POST /v1/webhooks is refused
	// (forbidden); empty: registrations are accepted.
	RegistrationClosed string
	// MaxAttempts before a delivery is dead-lettered (default 8).
	MaxAttempts int
	// Backoff is the base delay after the first failure; it doubles per
	// attempt up to MaxBackoff, and the actual delay is drawn uniformly
	// from [0, delay] (full jitter). Defaults 1s and 5m.
	Backoff, MaxBackoff time.Duration
	Breaker             Breaker
	// Tick is how often parked documents are checked (default 1s).
	Tick     time.Duration
	Priority tasks.Priority // of delivery tasks (default low)
	Log      logrus.FieldLogger
	Now      func() time.Time
}

// Service delivers webhooks.
type Service struct {
	opt  Options
	http *http.Client // every connection through opt.Targets

	endpoints atomic.Pointer[[]Endpoint]
	regMu     sync.Mutex // serialises registry writes of this replica

	brMu     sync.Mutex
	breakers map[string]*breaker

	locks keylock.Set // one delivery run per (endpoint, document) at a time

	sent, failures, deadLettered atomic.Int64
}

// New returns the webhooks service and registers its task kinds.
func New(opt Options) *Service {
	if opt.MaxAttempts <= 0 {
		opt.MaxAttempts = 8
	}
	if opt.Backoff <= 0 {
		opt.Backoff = time.Second
	}
	if opt.MaxBackoff <= 0 {
		opt.MaxBackoff = 5 * time.Minute
	}
	if opt.Breaker.Failures <= 0 {
		opt.Breaker.Failures = 5
	}
	if opt.Breaker.Open <= 0 {
		opt.Breaker.Open = 30 * time.Second
	}
	if opt.Tick <= 0 {
		opt.Tick = time.Second
	}
	if opt.Priority == "" {
		opt.Priority = tasks.Low
	}
	if opt.Targets == nil {
		opt.Targets, _ = NewGuard(GuardOptions{}) // an empty allow-list always parses
	}
	if opt.Getenv == nil {
		opt.Getenv = os.Getenv
	}
	if opt.Log == nil {
		opt.Log = logs.Discard()
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	s := &Service{opt: opt, http: opt.Targets.Client(deliveryTimeout), breakers: map[string]*breaker{}}
	s.endpoints.Store(ptr(s.configured()))
	opt.Tasks.Register(KindDeliver, s.runDeliver)
	opt.Tasks.Register(KindReplay, s.runReplay)
	opt.Tasks.OnDead(KindDeliver, s.deliverDead)
	return s
}

func ptr[T any](v T) *T { return &v }

// configured lists the endpoints of the collections file.
func (s *Service) configured() []Endpoint {
	var out []Endpoint
	for _, name := range slices.Sorted(maps.Keys(s.opt.Integrations)) {
		for _, w := range s.opt.Integrations[name].Webhooks {
			secret := s.opt.Getenv(w.SecretEnv)
			if secret == "" {
				s.opt.Log.WithFields(logrus.Fields{"webhook": w.ID, "variable": w.SecretEnv}).
					Warn("webhook secret variable is empty; its deliveries are signed with an empty key")
			}
			out = append(out, Endpoint{ID: w.ID, Collection: name, URL: w.URL, Secret: secret, Source: "config"})
		}
	}
	return out
}

// deliverTask is the payload of a delivery task.
type deliverTask struct {
	Endpoint string `json:"endpoint"`
	Doc      string `json:"doc"`
	UpTo     int64  `json:"upto,omitempty"`
}

// Observe queues deliveries for committed changes (called after each
// commit, on the replica that committed). It never blocks.
func (s *Service) Observe(changes []core.Change) {
	eps := *s.endpoints.Load()
	if len(eps) == 0 {
		return
	}
	last := map[string]int64{}
	for _, c := range changes {
		last[c.Doc] = max(last[c.Doc], c.Version)
	}
	for doc, v := range last {
		coll, _, _ := strings.Cut(doc, "/")
		for _, e := range eps {
			if e.Collection != coll {
				continue
			}
			b, _ := json.Marshal(deliverTask{Endpoint: e.ID, Doc: doc, UpTo: v})
			s.opt.Tasks.Submit(tasks.Task{Kind: KindDeliver, Priority: s.opt.Priority, Payload: b})
		}
	}
}

func newID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
