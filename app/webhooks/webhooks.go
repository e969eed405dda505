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
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/sony/gobreaker/v2"

	"github.com/open-autoglm/autoglm/app/collections"
	"github.com/open-autoglm/autoglm/app/core"
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
	// Collections declares the configured endpoints.
	Collections *collections.Config
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

	lockMu sync.Mutex
	locks  map[string]*docLock

	sent, failures, deadLettered atomic.Int64
}

type breaker struct {
	cb          *gobreaker.CircuitBreaker[struct{}]
	mu          sync.Mutex
	transitions []Transition
}

// Transition is a change of an endpoint's breaker state.
type Transition struct {
	From string    `json:"from"`
	To   string    `json:"to"`
	At   time.Time `json:"at"`
}

type docLock struct {
	mu   sync.Mutex
	refs int
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
	if opt.Collections == nil {
		opt.Collections = collections.Default()
	}
	if opt.Log == nil {
		l := logrus.New()
		l.SetOutput(io.Discard)
		opt.Log = l
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	s := &Service{opt: opt, http: opt.Targets.Client(deliveryTimeout), breakers: map[string]*breaker{}, locks: map[string]*docLock{}}
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
	for _, name := range s.opt.Collections.Names() {
		col, _ := s.opt.Collections.Collection(name)
		for _, w := range col.Webhooks {
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

// State keys.
const registryKey = "_webhooks:registry"

func cursorKey(endpoint, doc string) string {
	return "_webhooks:cursor:" + endpoint + ":" + strings.Replace(doc, "/", ":", 1)
}
func retryKey(endpoint string) string { return "_webhooks:retry:" + endpoint }

const deadKey = "_webhooks:dead"

type registry struct {
	Endpoints []Endpoint `json:"endpoints"`
}

// Refresh reloads the API-registered endpoints from the state store.
func (s *Service) Refresh(ctx context.Context) error {
	var reg registry
	if _, err := s.load(ctx, registryKey, &reg); err != nil {
		return err
	}
	all := append(s.configured(), reg.Endpoints...)
	s.endpoints.Store(&all)
	return nil
}

// Endpoints lists the known endpoints (secrets included).
func (s *Service) Endpoints() []Endpoint { return slices.Clone(*s.endpoints.Load()) }

func (s *Service) endpoint(id string) (Endpoint, bool) {
	for _, e := range *s.endpoints.Load() {
		if e.ID == id {
			return e, true
		}
	}
	return Endpoint{}, false
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

// cursor is the delivery state of one (endpoint, document).
type cursor struct {
	Delivered int64  `json:"delivered"`
	Target    int64  `json:"target"`
	Attempts  int    `json:"attempts,omitempty"`
	NextAt    int64  `json:"next_at,omitempty"` // Unix ms of the next try while parked
	LastError string `json:"last_error,omitempty"`
}

func (s *Service) lock(key string) func() {
	s.lockMu.Lock()
	l := s.locks[key]
	if l == nil {
		l = &docLock{}
		s.locks[key] = l
	}
	l.refs++
	s.lockMu.Unlock()
	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		s.lockMu.Lock()
		if l.refs--; l.refs == 0 {
			delete(s.locks, key)
		}
		s.lockMu.Unlock()
	}
}

// runDeliver brings one endpoint's cursor of one document up to date.
func (s *Service) runDeliver(ctx context.Context, t tasks.Task) error {
	var dt deliverTask
	if err := json.Unmarshal(t.Payload, &dt); err != nil {
		return tasks.Permanent(fmt.Errorf("delivery task: %w", err))
	}
	k, err := core.ParseKey(dt.Doc)
	if err != nil {
		return tasks.Permanent(err)
	}
	ep, ok := s.endpoint(dt.Endpoint)
	if !ok {
		if err := s.Refresh(ctx); err != nil {
			return err
		}
		if ep, ok = s.endpoint(dt.Endpoint); !ok {
			return nil // the endpoint was removed
		}
	}
	defer s.lock(dt.Endpoint + "|" + dt.Doc)()
	key := cursorKey(ep.ID, dt.Doc)
	// A lost race means another replica moved the cursor: start again from
	// it.
	return kv.Retry(ctx, func(ctx context.Context) error {
		var cur cursor
		etag, err := s.load(ctx, key, &cur)
		if err != nil {
			return err
		}
		cur.Target = max(cur.Target, dt.UpTo)
		if cur.Target <= cur.Delivered {
			return nil
		}
		now := s.opt.Now()
		if cur.NextAt > now.UnixMilli() {
			// Parked: remember how far to go, and make sure the retry loop
			// wakes it (it may have woken it early, for an earlier try).
			if err := s.park(ctx, ep.ID, dt.Doc, cur.NextAt); err != nil {
				return err
			}
			if dt.UpTo > 0 {
				return s.save(ctx, key, etag, &cur)
			}
			return nil
		}
		return s.pump(ctx, ep, k, key, etag, &cur)
	})
}

// pump sends the pending versions in order, saving the cursor after each.
func (s *Service) pump(ctx context.Context, ep Endpoint, k core.Key, key, etag string, cur *cursor) error {
	changes, err := s.opt.Changes(ctx, k, cur.Delivered+1, cur.Target)
	if err != nil {
		return err
	}
	if len(changes) == 0 {
		// The versions left the op log before they could be sent; the
		// next delivery's prev_version shows the gap.
		s.opt.Log.WithFields(logrus.Fields{"webhook": ep.ID, "doc": k.String(), "from": cur.Delivered + 1}).
			Warn("webhook versions no longer in the op log; skipped")
		cur.Delivered = cur.Target
		return s.save(ctx, key, etag, cur)
	}
	for _, c := range changes {
		send := true
		if s.opt.Filter != nil {
			c, send = s.opt.Filter(ep, c)
		}
		if send {
			err = s.send(ctx, ep, c, cur.Attempts+1, false)
		}
		if err != nil {
			return s.failed(ctx, ep, k, key, etag, cur, c.Version, err)
		}
		cur.Delivered, cur.Attempts, cur.NextAt, cur.LastError = c.Version, 0, 0, ""
		if err := s.save(ctx, key, etag, cur); err != nil {
			return err
		}
		if etag, err = s.load(ctx, key, &cursor{}); err != nil {
			return err
		}
	}
	return nil
}

// failed records a failed attempt: park with backoff, or dead-letter the
// pending versions after MaxAttempts.
func (s *Service) failed(ctx context.Context, ep Endpoint, k core.Key, key, etag string, cur *cursor, v int64, cause error) error {
	s.failures.Add(1)
	cur.LastError = cause.Error()
	var d time.Duration
	if errors.Is(cause, gobreaker.ErrOpenState) || errors.Is(cause, gobreaker.ErrTooManyRequests) {
		// The endpoint was not called: no attempt is spent. Come back
		// around when the breaker lets a probe through.
		d = s.opt.Breaker.Open/4 + time.Duration(mrand.Int64N(int64(s.opt.Breaker.Open/4)+1))
	} else {
		cur.Attempts++
		d = min(s.opt.Backoff<<(cur.Attempts-1), s.opt.MaxBackoff)
		d = time.Duration(mrand.Int64N(int64(d) + 1)) // full jitter
	}
	// A refused target stays refused until the rules change: retrying
	// cannot help, so it is dead-lettered at once, to be replayed after.
	var refused *RefusedError
	log := s.opt.Log.WithFields(logrus.Fields{"webhook": ep.ID, "doc": k.String(), "version": v, "attempt": cur.Attempts})
	if cur.Attempts >= s.opt.MaxAttempts || errors.As(cause, &refused) {
		letter := DeadLetter{ID: newID(), Endpoint: ep.ID, Doc: k.String(), From: v, To: cur.Target,
			Attempts: cur.Attempts, Error: cur.LastError, At: s.opt.Now().UTC()}
		if err := s.addDead(ctx, letter); err != nil {
			return err
		}
		log.WithError(cause).Warn("webhook delivery dead-lettered")
		cur.Delivered, cur.Attempts, cur.NextAt = cur.Target, 0, 0
		return s.save(ctx, key, etag, cur)
	}
	cur.NextAt = s.opt.Now().Add(d).UnixMilli()
	// On the retry list first: a crash before the cursor is saved leaves a
	// harmless wake-up, never a parked document nobody wakes.
	if err := s.park(ctx, ep.ID, k.String(), cur.NextAt); err != nil {
		return err
	}
	log.WithError(cause).WithField("retry_in", d.Round(time.Millisecond)).Info("webhook delivery failed; parked")
	return s.save(ctx, key, etag, cur)
}

type retryList struct {
	Docs map[string]int64 `json:"docs"` // document → Unix ms of its next try
}

func (s *Service) park(ctx context.Context, endpoint, doc string, at int64) error {
	return update(ctx, s, retryKey(endpoint), func(r *retryList) bool {
		if r.Docs == nil {
			r.Docs = map[string]int64{}
		}
		if old, ok := r.Docs[doc]; ok && old <= at {
			return false
		}
		r.Docs[doc] = at
		return true
	})
}

// Run checks the retry lists every Tick and re-queues the documents whose
// time has come; it also reloads the endpoint registry. It returns when ctx
// ends.
func (s *Service) Run(ctx context.Context) {
	t := time.NewTicker(s.opt.Tick)
	defer t.Stop()
	refresh := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if refresh++; refresh%5 == 1 {
			if err := s.Refresh(ctx); err != nil {
				s.opt.Log.WithError(err).Debug("webhook registry not refreshed")
			}
		}
		s.wake(ctx)
	}
}

// wake re-queues parked documents that are due.
func (s *Service) wake(ctx context.Context) {
	now := s.opt.Now().UnixMilli()
	for _, e := range *s.endpoints.Load() {
		var due []string
		err := update(ctx, s, retryKey(e.ID), func(r *retryList) bool {
			due = due[:0]
			for doc, at := range r.Docs {
				if at <= now {
					due = append(due, doc)
					delete(r.Docs, doc)
				}
			}
			return len(due) > 0
		})
		if err != nil {
			s.opt.Log.WithError(err).WithField("webhook", e.ID).Debug("retry list not read")
			continue
		}
		for _, doc := range due {
			b, _ := json.Marshal(deliverTask{Endpoint: e.ID, Doc: doc})
			s.opt.Tasks.Submit(tasks.Task{Kind: KindDeliver, Priority: s.opt.Priority, Payload: b})
		}
	}
}

// Delivery is the JSON body POSTed to an endpoint.
type Delivery struct {
	ID         string          `json:"id"` // <webhook>:<doc>@<version>: the same on every retry
	Type       string          `json:"type"`
	Webhook    string          `json:"webhook"`
	Collection string          `json:"collection"`
	Doc        string          `json:"doc"`
	Version    int64           `json:"version"`
	Prev       int64           `json:"prev_version"`
	Ops        json.RawMessage `json:"ops,omitempty"`
	Author     string          `json:"by,omitempty"`
	HLC        string          `json:"hlc,omitempty"`
	Created    bool            `json:"created,omitempty"`
	Deleted    bool            `json:"deleted,omitempty"`
	Attempt    int             `json:"attempt"`
	Replay     bool            `json:"replay,omitempty"`
}

// EventType names what a change did: document.created, document.deleted or
// document.changed.
func EventType(c core.Change) string {
	switch {
	case c.Deleted:
		return "document.deleted"
	case c.Created:
		return "document.created"
	default:
		return "document.changed"
	}
}

// Headers of a delivery.
const (
	HeaderSignature = "Autoglm-Signature"
	HeaderWebhook   = "Autoglm-Webhook-Id"
	HeaderDelivery  = "Autoglm-Delivery-Id"
)

// Sign returns the Autoglm-Signature value for body at time ts:
// "t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>" with secret>".
func Sign(secret string, ts time.Time, body []byte) string {
	t := strconv.FormatInt(ts.Unix(), 10)
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(t))
	m.Write([]byte("."))
	m.Write(body)
	return "t=" + t + ",v1=" + hex.EncodeToString(m.Sum(nil))
}

// Verify checks a signature header against body, accepting timestamps
// within tolerance of now (receivers should reject replays of old bodies).
func Verify(secret, header string, body []byte, now time.Time, tolerance time.Duration) error {
	var ts int64
	var sigs []string
	for _, part := range strings.Split(header, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch k {
		case "t":
			ts, _ = strconv.ParseInt(v, 10, 64)
		case "v1":
			sigs = append(sigs, v)
		}
	}
	if ts == 0 || len(sigs) == 0 {
		return errors.New("signature header malformed")
	}
	if d := now.Sub(time.Unix(ts, 0)); d > tolerance || d < -tolerance {
		return fmt.Errorf("signature timestamp %d outside the tolerance", ts)
	}
	want := Sign(secret, time.Unix(ts, 0), body)
	_, wantSig, _ := strings.Cut(want, ",v1=")
	for _, sig := range sigs {
		if hmac.Equal([]byte(sig), []byte(wantSig)) {
			return nil
		}
	}
	return errors.New("signature does not match")
}

func (s *Service) breaker(id string) *breaker {
	s.brMu.Lock()
	defer s.brMu.Unlock()
	b := s.breakers[id]
	if b == nil {
		b = &breaker{}
		failures := uint32(s.opt.Breaker.Failures)
		b.cb = gobreaker.NewCircuitBreaker[struct{}](gobreaker.Settings{
			Name:        id,
			MaxRequests: 1,
			Timeout:     s.opt.Breaker.Open,
			ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= failures },
			OnStateChange: func(name string, from, to gobreaker.State) {
				b.mu.Lock()
				b.transitions = append(b.transitions, Transition{From: from.String(), To: to.String(), At: s.opt.Now().UTC()})
				if len(b.transitions) > 50 {
					b.transitions = b.transitions[len(b.transitions)-50:]
				}
				b.mu.Unlock()
				s.opt.Log.WithFields(logrus.Fields{"webhook": name, "from": from.String(), "to": to.String()}).Warn("webhook circuit breaker")
			},
		})
		s.breakers[id] = b
	}
	return b
}

// send POSTs one change through the endpoint's breaker.
func (s *Service) send(ctx context.Context, ep Endpoint, c core.Change, attempt int, replay bool) error {
	coll, _, _ := strings.Cut(c.Doc, "/")
	d := Delivery{
		ID: ep.ID + ":" + c.Doc + "@" + strconv.FormatInt(c.Version, 10), Type: EventType(c), Webhook: ep.ID,
		Collection: coll, Doc: c.Doc, Version: c.Version, Prev: c.Prev, Author: c.Author,
		Created: c.Created, Deleted: c.Deleted, Attempt: attempt, Replay: replay,
	}
	if !c.HLC.IsZero() {
		d.HLC = c.HLC.String()
	}
	if len(c.Ops) > 0 {
		d.Ops, _ = json.Marshal(c.Ops)
	}
	body, err := json.Marshal(d)
	if err != nil {
		return err
	}
	_, err = s.breaker(ep.ID).cb.Execute(func() (struct{}, error) {
		rctx, cancel := context.WithTimeout(ctx, deliveryTimeout+time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(rctx, http.MethodPost, ep.URL, bytes.NewReader(body))
		if err != nil {
			return struct{}{}, err
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("User-Agent", "autoglm-webhooks/1")
		req.Header.Set(HeaderWebhook, ep.ID)
		req.Header.Set(HeaderDelivery, d.ID)
		req.Header.Set(HeaderSignature, Sign(ep.Secret, s.opt.Now(), body))
		resp, err := s.http.Do(req)
		if err != nil {
			return struct{}{}, err
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			return struct{}{}, fmt.Errorf("endpoint answered %d", resp.StatusCode)
		}
		return struct{}{}, nil
	})
	if err == nil {
		s.sent.Add(1)
	}
	return err
}

// DeadLetter is a range of versions of one document that one endpoint did
// not accept within MaxAttempts.
type DeadLetter struct {
	ID       string    `json:"id"`
	Endpoint string    `json:"webhook"`
	Doc      string    `json:"doc"`
	From     int64     `json:"from_version"`
	To       int64     `json:"to_version"`
	Attempts int       `json:"attempts"`
	Error    string    `json:"error"`
	At       time.Time `json:"at"`
}

type deadList struct {
	Letters []DeadLetter `json:"letters"`
}

// maxDead bounds the dead-letter list; the oldest letters go first.
const maxDead = 1000

func newID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func (s *Service) addDead(ctx context.Context, l DeadLetter) error {
	s.deadLettered.Add(1)
	return update(ctx, s, deadKey, func(d *deadList) bool {
		d.Letters = append(d.Letters, l)
		if len(d.Letters) > maxDead {
			d.Letters = d.Letters[len(d.Letters)-maxDead:]
		}
		return true
	})
}

// DeadLetters lists the dead letters, oldest first.
func (s *Service) DeadLetters(ctx context.Context) ([]DeadLetter, error) {
	var d deadList
	_, err := s.load(ctx, deadKey, &d)
	return d.Letters, err
}

// deliverDead handles a delivery task that failed every task-level retry
// (its store reads failed, not the endpoint): the pending versions are
// recorded as a dead letter so they can be replayed.
func (s *Service) deliverDead(ctx context.Context, t tasks.Task) {
	var dt deliverTask
	if json.Unmarshal(t.Payload, &dt) != nil {
		return
	}
	var cur cursor
	if _, err := s.load(ctx, cursorKey(dt.Endpoint, dt.Doc), &cur); err != nil {
		s.opt.Log.WithError(err).Warn("dead delivery task: cursor unreadable")
	}
	to := max(cur.Target, dt.UpTo)
	if to <= cur.Delivered {
		return
	}
	_ = s.addDead(ctx, DeadLetter{ID: newID(), Endpoint: dt.Endpoint, Doc: dt.Doc, From: cur.Delivered + 1, To: to,
		Error: "delivery task failed every retry", At: s.opt.Now().UTC()})
}

type replayTask struct {
	Letter string `json:"letter"`
}

// Replay queues a dead letter to be sent again and returns the task id.
func (s *Service) Replay(ctx context.Context, id string) (string, error) {
	letters, err := s.DeadLetters(ctx)
	if err != nil {
		return "", err
	}
	if !slices.ContainsFunc(letters, func(l DeadLetter) bool { return l.ID == id }) {
		return "", core.Errorf(core.CodeNotFound, "no dead letter %q", id)
	}
	b, _ := json.Marshal(replayTask{Letter: id})
	t, err := s.opt.Tasks.Enqueue(ctx, tasks.Task{Kind: KindReplay, Priority: tasks.Medium, Payload: b})
	return t.ID, err
}

// runReplay sends a dead letter's versions again, in order, flagged
// replay, and removes the letter once all were accepted.
func (s *Service) runReplay(ctx context.Context, t tasks.Task) error {
	var rt replayTask
	if err := json.Unmarshal(t.Payload, &rt); err != nil {
		return tasks.Permanent(err)
	}
	letters, err := s.DeadLetters(ctx)
	if err != nil {
		return err
	}
	i := slices.IndexFunc(letters, func(l DeadLetter) bool { return l.ID == rt.Letter })
	if i < 0 {
		return nil // already replayed
	}
	l := letters[i]
	ep, ok := s.endpoint(l.Endpoint)
	if !ok {
		return tasks.Permanent(fmt.Errorf("webhook %q no longer exists", l.Endpoint))
	}
	k, err := core.ParseKey(l.Doc)
	if err != nil {
		return tasks.Permanent(err)
	}
	changes, err := s.opt.Changes(ctx, k, l.From, l.To)
	if err != nil {
		return err
	}
	for _, c := range changes {
		send := true
		if s.opt.Filter != nil {
			c, send = s.opt.Filter(ep, c)
		}
		if !send {
			continue
		}
		if err := s.send(ctx, ep, c, 1, true); err != nil {
			return fmt.Errorf("replay %s@%d: %w", l.Doc, c.Version, err)
		}
	}
	return update(ctx, s, deadKey, func(d *deadList) bool {
		n := len(d.Letters)
		d.Letters = slices.DeleteFunc(d.Letters, func(x DeadLetter) bool { return x.ID == l.ID })
		return len(d.Letters) != n
	})
}

// EndpointStats is one endpoint's breaker as seen by this replica.
type EndpointStats struct {
	Breaker     string       `json:"breaker"`
	Transitions []Transition `json:"transitions,omitempty"`
}

// Stats are this replica's delivery counters.
type Stats struct {
	Sent         int64                    `json:"sent"`
	Failed       int64                    `json:"failed"`
	DeadLettered int64                    `json:"dead_lettered"`
	Endpoints    map[string]EndpointStats `json:"endpoints"`
}

// Stats returns this replica's counters and breaker states.
func (s *Service) Stats() Stats {
	st := Stats{Sent: s.sent.Load(), Failed: s.failures.Load(), DeadLettered: s.deadLettered.Load(),
		Endpoints: map[string]EndpointStats{}}
	s.brMu.Lock()
	defer s.brMu.Unlock()
	for id, b := range s.breakers {
		// State takes the breaker's lock, under which it calls
		// OnStateChange, which takes b.mu: never hold b.mu here.
		state := b.cb.State().String()
		b.mu.Lock()
		st.Endpoints[id] = EndpointStats{Breaker: state, Transitions: slices.Clone(b.transitions)}
		b.mu.Unlock()
	}
	return st
}

// Register adds an endpoint through the API; a missing secret is
// generated. It returns the endpoint with its secret.
func (s *Service) Register(ctx context.Context, e Endpoint) (Endpoint, error) {
	if !core.ValidCollection(e.Collection) {
		return e, core.Errorf(core.CodeInvalidName, "collection name %q: want [a-z][a-z0-9_-]{0,63}", e.Collection)
	}
	if err := s.opt.Targets.CheckURL(ctx, e.URL); err != nil {
		var refused *RefusedError
		switch {
		case errors.As(err, &refused) && refused.Allowable:
			return e, core.Errorf(core.CodeForbidden, "%v; list internal receivers in AUTOGLM_WEBHOOK_ALLOW", err)
		case errors.As(err, &refused):
			return e, core.Errorf(core.CodeForbidden, "%v", err)
		}
		return e, core.Errorf(core.CodeBadRequest, "%v", err)
	}
	if e.Secret == "" {
		var b [24]byte
		_, _ = rand.Read(b[:])
		e.Secret = "whsec_" + hex.EncodeToString(b[:])
	}
	e.ID = "wh_" + newID()
	e.Source = "api"
	e.Created = s.opt.Now().UTC()
	s.regMu.Lock()
	defer s.regMu.Unlock()
	err := update(ctx, s, registryKey, func(r *registry) bool {
		r.Endpoints = append(r.Endpoints, e)
		return true
	})
	if err != nil {
		return e, err
	}
	return e, s.Refresh(ctx)
}

// Remove deletes an API-registered endpoint.
func (s *Service) Remove(ctx context.Context, id string) error {
	if e, ok := s.endpoint(id); ok && e.Source == "config" {
		return core.Errorf(core.CodeConflict, "webhook %q is declared in the collections file; remove it there", id)
	}
	found := false
	s.regMu.Lock()
	defer s.regMu.Unlock()
	err := update(ctx, s, registryKey, func(r *registry) bool {
		n := len(r.Endpoints)
		r.Endpoints = slices.DeleteFunc(r.Endpoints, func(e Endpoint) bool { return e.ID == id })
		found = len(r.Endpoints) != n
		return found
	})
	if err != nil {
		return err
	}
	if !found {
		return core.Errorf(core.CodeNotFound, "no webhook %q", id)
	}
	return s.Refresh(ctx)
}
