// Package service wires the adapters and the domain into one running
// replica: store, bus and readiness probe (Deps), engine, hub, HTTP API and,
// on the state port (Deps.Features), the task queue, webhooks, events and
// compaction. It imports no Dapr package: the command and the tests start
// it on the Dapr adapters (package daprdeps) or in process (MemoryDeps).
package service

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/time/rate"

	"github.com/open-autoglm/autoglm/app/auth"
	"github.com/open-autoglm/autoglm/app/clock"
	"github.com/open-autoglm/autoglm/app/collections"
	"github.com/open-autoglm/autoglm/app/collections/schemafile"
	"github.com/open-autoglm/autoglm/app/compaction"
	"github.com/open-autoglm/autoglm/app/config"
	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/daprsub"
	"github.com/open-autoglm/autoglm/app/engine"
	"github.com/open-autoglm/autoglm/app/events"
	"github.com/open-autoglm/autoglm/app/httpapi"
	"github.com/open-autoglm/autoglm/app/hub"
	"github.com/open-autoglm/autoglm/app/metrics"
	"github.com/open-autoglm/autoglm/app/query/live"
	"github.com/open-autoglm/autoglm/app/session"
	"github.com/open-autoglm/autoglm/app/tasks"
	"github.com/open-autoglm/autoglm/app/telemetry"
	"github.com/open-autoglm/autoglm/app/webhooks"
)

// Service is one replica.
type Service struct {
	cfg    config.Config
	log    logrus.FieldLogger
	deps   Deps
	engine *engine.Engine
	api    *httpapi.Server
	hub    *hub.Hub
	srv    *http.Server
	ln     net.Listener

	metrics    *metrics.Metrics
	telemetry  *telemetry.Telemetry
	compaction *compaction.Job
	tasks      *tasks.Queue
	webhooks   *webhooks.Service
	compacted  chan struct{} // closed when the compaction job has stopped
	queries    *live.Engine

	stopProbe   context.CancelFunc
	stopReceive func()
	// subs are the task queue's subscriptions; stopSubscribe ends their
	// in-process delivery (Features.Subscribe).
	subs          []daprsub.Subscription
	stopSubscribe func()
	closeAuth     func()
	stopPprof     func()
	serveErr      chan error
}

// New builds a replica from cfg on deps. It does not listen yet. Shutdown
// closes deps.
func New(cfg config.Config, log logrus.FieldLogger, deps Deps) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if cfg.AppAPIToken == "" && deps.Receive == nil {
		log.Warn("APP_API_TOKEN is not set: anyone who reaches the app port can post broadcasts and tasks to the routes daprd calls. " +
			"The dev runners and test harnesses set one per run; set it wherever the app listens beyond loopback.")
	}
	cols := collections.Default()
	if cfg.Collections != "" {
		var err error
		if cols, err = schemafile.Load(cfg.Collections); err != nil {
			return nil, err // names the file, line and problem
		}
		log.WithFields(logrus.Fields{"file": cfg.Collections, "collections": cols.Names()}).Info("collections loaded")
	}
	access := httpapi.Access{
		Policy:        auth.Policy{Collections: cols, Enforce: cfg.Auth == "jwt"},
		ConnRate:      rate.Limit(cfg.ConnRate),
		ConnBurst:     int(2 * cfg.ConnRate),
		IdentityRate:  rate.Limit(cfg.IdentityRate),
		IdentityBurst: int(2 * cfg.IdentityRate),
	}
	var closeAuth func()
	if cfg.Auth == "jwt" {
		v, err := auth.NewJWT(context.Background(), auth.Options{Secret: []byte(cfg.JWTSecret), JWKSURL: cfg.JWKSURL,
			Issuer: cfg.JWTIssuer, Audience: cfg.JWTAudience})
		if err != nil {
			return nil, err
		}
		access.Verifier, closeAuth = v, v.Close
	} else {
		log.Warn("AUTHENTICATION IS OFF: every caller is anonymous and may claim any role. " +
			"This is the embedded development default; set AUTOGLM_AUTH=jwt for anything else.")
	}
	tel := deps.Telemetry
	if tel == nil {
		var err error
		if tel, err = NewTelemetry(cfg, log); err != nil {
			return nil, err
		}
	}
	tracer := tel.Tracer()
	store, bus := deps.Store, deps.Bus
	m := metrics.New(nil)
	m.BuildInfo(cfg.Version)
	m.TaskKinds(webhooks.KindDeliver, webhooks.KindReplay, events.KindPublish)
	h := hub.New(hub.Options{
		Tracer: tracer,
		OnDrop: m.Dropped,
		Node:   cfg.NodeID,
		// Presence lives three heartbeats without a refresh.
		PresenceTTL: 3 * cfg.Heartbeat,
		PublishPresence: func(ps []core.Presence) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := bus.PublishPresence(ctx, ps); err != nil {
				m.PublishFailed("presence")
				log.WithError(err).Debug("presence broadcast failed")
			}
		},
	})
	// Live queries: an in-memory index of each queried collection, kept up
	// to date from every change the hub sees.
	queries := live.New(store)
	// A hub observer: live queries follow every change, wherever it was
	// committed.
	h.Observe("live-queries", queries.Observe)
	s := &Service{cfg: cfg, log: log, deps: deps, hub: h, queries: queries, metrics: m, telemetry: tel, closeAuth: closeAuth,
		serveErr: make(chan error, 1)}
	// Commits made here go to the hub (the local fast path) and to the
	// features that see each commit once cluster-wide (engine.Observer).
	observers := []engine.Observer{{Name: "hub", Changes: h.Deliver}}
	var extra []httpapi.Route
	if deps.Features != nil {
		var err error
		if observers, extra, s.subs, err = s.features(cols, observers); err != nil {
			return nil, err
		}
	}
	eng := engine.New(engine.Options{
		Store:       store,
		Bus:         bus,
		Clock:       clock.New(cfg.NodeID, time.Now, cfg.MaxClockSkew),
		Observers:   observers,
		LogWindow:   cfg.LogWindow,
		Collections: cols,
		Retries:     cfg.WriteRetries,
		MaxOps:      cfg.MaxOpsPerMsg,
		MaxDoc:      cfg.MaxDocBytes,
		Authorize: func(op core.Op, coll string, data map[string]any) error {
			return access.Policy.CanWrite(auth.Identity{Subject: op.Subject, Roles: op.Roles}, coll, data)
		},
		Log:     log,
		Metrics: m.Engine(),
		Tracer:  tracer,
	})
	m.WatchSubscriptions(h.Watched)
	m.WatchQueue("engine_writes", eng.Pending)
	s.engine = eng
	s.api = &httpapi.Server{
		Engine: eng, Lister: store, Hub: h, Queries: queries, Log: log, Version: cfg.Version, Node: cfg.NodeID,
		Ready:   deps.Probe.Ready,
		Dapr:    s.router(),
		MaxBody: cfg.MaxBodyBytes, Heartbeat: cfg.Heartbeat, SessionQueue: cfg.SessionQueueLen(), MaxSubs: cfg.MaxSubs,
		BodyTimeout: cfg.BodyTimeout, HelloTimeout: cfg.HelloTimeout, ClientAddrHeader: cfg.ClientAddrHeader,
		MaxConnsPerAddr: cfg.MaxConnsPerAddr, MaxConnsPerIdentity: cfg.MaxConnsPerIdentity,
		AllowedOrigins: cfg.AllowedOrigins,
		HelloRoles:     cfg.Auth != "jwt",
		Access:         access,
		Metrics: httpapi.Metrics{Connection: m.Connection, Handler: m.Handler(), Requests: m.HTTP, Trace: tel.HTTP,
			Session: func(o *session.Options) {
				m.Session(o)
				o.Ops = tel.Ops(o.ID, m.OpAnswered)
			}},
		Extra: extra,
	}
	if deps.Features != nil && deps.Features.Queries != nil {
		s.api.StoreQueries = deps.Features.Queries
	}
	return s, nil
}

// features builds what runs on the state port (deps.Features): the task
// queue, webhooks, integration events and compaction. It returns the
// commit observers with theirs added, the features' admin routes and the
// task queue's subscriptions.
func (s *Service) features(cols *collections.Config, observers []engine.Observer) (
	[]engine.Observer, []httpapi.Route, []daprsub.Subscription, error) {
	cfg, log, m, store, state := s.cfg, s.log, s.metrics, s.deps.Store, s.deps.Features.State
	queue := tasks.New(tasks.Options{
		Publisher: state, Pubsub: cfg.TasksPubsub, TopicPrefix: cfg.TasksTopic, Done: state,
		Workers: cfg.TaskWorkers, Log: log.WithField("component", "tasks"), OnRetry: m.TaskRetry,
	})
	targets, err := webhooks.NewGuard(webhooks.GuardOptions{Allow: cfg.WebhookAllow,
		Protected: []int{cfg.DaprHTTPPort, cfg.DaprGRPCPort, cfg.Port}})
	if err != nil {
		return nil, nil, nil, fmt.Errorf("AUTOGLM_WEBHOOK_ALLOW: %w", err)
	}
	closed := ""
	if cfg.Auth != "jwt" && !cfg.WebhookAnonymous {
		closed = "webhook registration through the API needs authentication (AUTOGLM_AUTH=jwt, admin role); " +
			"set AUTOGLM_WEBHOOK_ANONYMOUS=true to allow it without"
	}
	hooks := webhooks.New(webhooks.Options{
		Targets: targets, RegistrationClosed: closed,
		State: state, Tasks: queue, Changes: store.Changes, Integrations: cols.Integrations,
		// Filter stays nil: every reader of a collection may read all of
		// its fields today; field-level read rules plug in here.
		MaxAttempts: cfg.WebhookAttempts, Backoff: cfg.WebhookBackoff, MaxBackoff: cfg.WebhookMaxBackoff,
		Breaker: webhooks.Breaker{Failures: cfg.WebhookBreakerTrip, Open: cfg.WebhookBreakerOpen},
		Tick:    cfg.WebhookTick, Log: log.WithField("component", "webhooks"),
	})
	// One compaction lease and one collections registry per cluster: the
	// replicas that share the broadcast topic.
	var viaOutbox func(context.Context, string) bool
	if use := s.deps.Features.UseOutbox; use != nil {
		viaOutbox = use(cols.Integrations.Events)
	}
	integration := events.New(events.Options{
		State: state, Pubsub: cfg.EventsPubsub, Topic: cfg.EventsTopic, Source: cfg.AppID,
		Tasks: queue, Changes: store.Changes, Integrations: cols.Integrations, ViaOutbox: viaOutbox,
		Log: log.WithField("component", "events"),
	})
	comp := compaction.New(compaction.Options{
		Store:     store,
		Registry:  compaction.NewRegistry(state, cfg.BroadcastTopic),
		Lock:      state,
		LockStore: cfg.LockStore,
		HasLock:   compaction.LockComponent(state, cfg.LockStore),
		Resource:  "compaction:" + cfg.BroadcastTopic,
		Owner:     cfg.NodeID,
		Interval:  cfg.CompactionInterval,
		Lease:     cfg.CompactionLease,
		Quiet:     cfg.CompactionQuiet,
		Window:    cfg.LogWindow,
		Declared:  cols.Names(),
		Log:       log,
	})
	s.tasks, s.webhooks, s.compaction = queue, hooks, comp
	// Compaction learns of new collections before the hub's sessions see
	// their first change; webhooks and events queue their tasks after.
	observers = append([]engine.Observer{{Name: "compaction", Changes: func(_ context.Context, cs []core.Change) { comp.Observe(cs) }}},
		observers...)
	observers = append(observers,
		engine.Observer{Name: "webhooks", Changes: func(_ context.Context, cs []core.Change) { hooks.Observe(cs) }},
		engine.Observer{Name: "events", Changes: func(_ context.Context, cs []core.Change) { integration.Observe(cs) }})
	extra := []httpapi.Route{
		{Pattern: "GET /v1/tasks/stats", Admin: true, Handle: func(*http.Request) (int, any, error) {
			return http.StatusOK, queue.Stats(), nil
		}},
		{Pattern: "POST /v1/webhooks", Admin: true, Handle: hooks.Create},
		{Pattern: "GET /v1/webhooks", Admin: true, Handle: hooks.List},
		{Pattern: "DELETE /v1/webhooks/{id}", Admin: true, Handle: hooks.Delete},
		{Pattern: "GET /v1/webhooks/dead", Admin: true, Handle: hooks.Dead},
		{Pattern: "POST /v1/webhooks/dead/{id}/replay", Admin: true, Handle: hooks.ReplayDead},
	}
	return observers, extra, queue.Subscriptions(), nil
}

// router serves the routes daprd delivers subscriptions to: the change
// broadcast and the task queue's (deps.Routes); nil when the replica
// receives in process (deps.Receive).
func (s *Service) router() http.Handler {
	if s.deps.Receive != nil || s.deps.Routes == nil {
		return nil
	}
	subs := s.subs
	if f := s.deps.Features; f != nil && f.Subscribe != nil {
		subs = nil
	}
	log, h := s.log, s.hub
	return s.deps.Routes(Inbound{
		Changes:  h.Deliver,
		Presence: h.RemotePresence,
		Tracer:   s.telemetry.Tracer(),
		OnError:  func(err error) { log.WithError(err).Warn("broadcast dropped") },
	}, subs)
}

// Start listens on the configured host and port (or ln, when given) and
// serves in the background.
func (s *Service) Start(ln net.Listener) error {
	if ln == nil {
		var err error
		ln, err = net.Listen("tcp", net.JoinHostPort(s.cfg.Host, strconv.Itoa(s.cfg.Port)))
		if err != nil {
			return fmt.Errorf("listen: %w", err)
		}
	}
	s.ln = ln
	if s.cfg.Pprof != "" {
		addr, stop, err := metrics.Pprof(s.cfg.Pprof)
		if err != nil {
			return fmt.Errorf("pprof: %w", err)
		}
		s.stopPprof = stop
		s.log.WithField("addr", addr.String()).Warn("profiler listening (AUTOGLM_PPROF)")
	}
	s.srv = &http.Server{
		Handler:           s.api.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
	}
	var ctx context.Context
	ctx, s.stopProbe = context.WithCancel(context.Background())
	go s.deps.Probe.Run(ctx)
	if s.deps.Receive != nil {
		s.stopReceive = s.deps.Receive(s.hub.Publish, s.hub.RemotePresence)
	}
	go s.sweepPresence(ctx)
	go s.antiEntropy(ctx)
	if s.deps.Features != nil {
		if sub := s.deps.Features.Subscribe; sub != nil {
			s.stopSubscribe = sub(s.subs)
		}
		s.startFeatures(ctx)
	}
	go func() { s.serveErr <- s.srv.Serve(ln) }()
	s.log.WithField("addr", ln.Addr().String()).Info("listening")
	return nil
}

// startFeatures starts the task workers, the webhook deliveries and
// compaction once the adapters answer.
func (s *Service) startFeatures(ctx context.Context) {
	ready := s.deps.Probe.Ready
	s.tasks.Start(ready)
	go func() {
		if waitReady(ctx, ready) {
			s.webhooks.Run(ctx)
		}
	}()
	if s.cfg.CompactionInterval > 0 {
		s.compacted = make(chan struct{})
		go func() {
			defer close(s.compacted)
			// A call before the sidecar listens would put the gRPC
			// connection into reconnect backoff: start once it answers.
			if waitReady(ctx, ready) {
				s.compaction.Run(ctx)
			}
		}()
	}
}

// waitReady polls ready until it reports true (true) or ctx ends (false).
func waitReady(ctx context.Context, ready func() bool) bool {
	for !ready() {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(100 * time.Millisecond):
		}
	}
	return true
}

// sweepPresence expires presence whose client or replica stopped
// refreshing it.
func (s *Service) sweepPresence(ctx context.Context) {
	every(ctx, time.Second, s.hub.Sweep)
}

// every calls f at every tick of interval until ctx ends.
func every(ctx context.Context, interval time.Duration, f func()) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			f()
		}
	}
}

// antiEntropy repairs what lost broadcasts would otherwise leave stale
// until the next change: every interval it compares each quiet watched
// document with the store and hands its newest changes to the hub. Sessions
// drop what they have and pull any older gap from the op log. One store
// read per quiet document per interval, whatever the number of sessions.
func (s *Service) antiEntropy(ctx context.Context) {
	if s.cfg.AntiEntropy > 0 {
		every(ctx, s.cfg.AntiEntropy, func() { s.repairQuiet(ctx) })
	}
}

// repairQuiet hands the hub the changes of the quiet watched documents
// that the store has and their watchers lack.
func (s *Service) repairQuiet(ctx context.Context) {
	for doc, known := range s.hub.Quiet(s.cfg.AntiEntropy) {
		k, err := core.ParseKey(doc)
		if err != nil {
			continue
		}
		st, err := s.engine.Load(ctx, k)
		if err != nil || st.Doc == nil {
			continue
		}
		var missed []core.Change
		for _, c := range st.Doc.Tail {
			if c.Version > known {
				missed = append(missed, c)
			}
		}
		if len(missed) == 0 && st.Doc.Version > known {
			// Compaction archived the tail to the op log: a pull hint
			// makes sessions read the versions they miss from there.
			missed = []core.Change{{Doc: doc, Version: st.Doc.Version, Prev: st.Doc.Version - 1, Pull: true}}
		}
		if len(missed) > 0 {
			s.log.WithFields(logrus.Fields{"doc": doc, "seen": known, "stored": st.Doc.Version}).Debug("anti-entropy: broadcast missed")
			s.hub.Publish(missed)
		}
		s.hub.Checked(doc, st.Doc.Version)
	}
}

// Done is closed-with-error when serving fails.
func (s *Service) Done() <-chan error { return s.serveErr }

// Ready reports whether the replica's adapters can serve (its sidecar is
// reachable).
func (s *Service) Ready() bool { return s.deps.Probe.Ready() }

// Shutdown stops accepting connections, finishes every queued write, then
// closes sync sessions with the "shutting down" code so clients resume on
// another replica.
func (s *Service) Shutdown(ctx context.Context) error {
	s.log.Info("shutting down")
	err := s.srv.Shutdown(ctx)
	if cerr := s.engine.Close(ctx); cerr != nil {
		s.log.WithError(cerr).Warn("writes still pending at shutdown")
		err = errors.Join(err, cerr)
	}
	s.api.Drain(ctx)
	s.queries.Close()
	if s.tasks != nil {
		if terr := s.tasks.Close(ctx); terr != nil {
			s.log.WithError(terr).Warn("submitted tasks not all published at shutdown")
		}
	}
	if s.stopSubscribe != nil {
		s.stopSubscribe()
	}
	s.stopProbe()
	if s.stopReceive != nil {
		s.stopReceive()
	}
	if s.compacted != nil {
		<-s.compacted // the lease is released before the client closes
	}
	if s.stopPprof != nil {
		s.stopPprof()
	}
	s.deps.Close()
	if terr := s.telemetry.Shutdown(ctx); terr != nil {
		s.log.WithError(terr).Warn("spans not all exported at shutdown")
	}
	s.log.Info("stopped")
	return err
}
