package service

import (
	"context"
	"net/http"

	"github.com/sirupsen/logrus"
	"go.opentelemetry.io/otel/trace"

	"github.com/open-autoglm/autoglm/app/config"
	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/daprsub"
	"github.com/open-autoglm/autoglm/app/httpapi"
	"github.com/open-autoglm/autoglm/app/inmem"
	"github.com/open-autoglm/autoglm/app/kv"
	"github.com/open-autoglm/autoglm/app/telemetry"
)

// Deps are the adapters one replica runs on. daprdeps.Deps builds them on
// the replica's sidecar (production); MemoryDeps keeps documents and
// broadcasts in process, so the whole HTTP API runs without daprd.
type Deps struct {
	// Store holds documents and their op log.
	Store Store
	// Bus broadcasts changes and presence to every replica.
	Bus core.Bus
	// Receive, when set, connects the replica to an in-process bus: the
	// service calls it once, at start, with the hub's handlers for received
	// changes and presence, and calls what it returns at shutdown. Over
	// Dapr, daprd delivers broadcasts to the HTTP routes instead.
	Receive func(changes func([]core.Change), presence func([]core.Presence)) (stop func())
	// Routes, when set, serves what daprd delivers to the app's /dapr/
	// routes: the change broadcast, handed to in, and subs, the task
	// queue's subscriptions. The service mounts it unless Receive is set.
	Routes func(in Inbound, subs []daprsub.Subscription) http.Handler
	// Probe reports whether the adapters can serve; readiness follows it.
	Probe Probe
	// Features runs the features kept on the state port: the task queue,
	// webhooks, integration events and compaction. Without it those
	// features are off and their routes absent.
	Features *Features
	// Telemetry, when set, is the tracing the adapters were built with;
	// nil: New sets it up from the environment.
	Telemetry *telemetry.Telemetry
	// Close releases the adapters; Shutdown calls it last.
	Close func()
}

// Inbound is where a replica takes what the other replicas broadcast.
type Inbound struct {
	// Changes delivers received changes; ctx carries the receipt's span.
	Changes func(ctx context.Context, changes []core.Change)
	// Presence delivers presence broadcast by other replicas.
	Presence func([]core.Presence)
	// Tracer records each receipt as a span (a child of the commit's).
	Tracer trace.Tracer
	// OnError sees broadcasts that could not be read.
	OnError func(error)
}

// Store is what the service reads and writes documents through.
type Store interface {
	core.Store
	core.Lister
}

// Probe tells whether the replica's adapters answer.
type Probe interface {
	Ready() bool
	// Run keeps Ready current until ctx ends.
	Run(ctx context.Context)
}

// Features is what the non-document features run on.
type Features struct {
	// State keeps their records, publishes their tasks and events, and
	// holds the compaction lease.
	State kv.State
	// Subscribe, when set, delivers the task queue's subscriptions in
	// process: the service calls it once, at start, and calls what it
	// returns at shutdown. Nil: daprd delivers them to the app's
	// /dapr/ routes.
	Subscribe func(subs []daprsub.Subscription) (stop func())
	// UseOutbox, when set, turns the transactional outbox on for the
	// collections that publish integration events, and returns whether a
	// collection's commits go through it. Nil: every event goes through
	// the task queue.
	UseOutbox func(events func(collection string) bool) (viaOutbox func(ctx context.Context, collection string) bool)
	// Queries, when set, serves REST queries through the state store's
	// query API where the store has one.
	Queries httpapi.StoreQuerier
}

// NewTelemetry sets tracing up from the environment.
func NewTelemetry(cfg config.Config, log logrus.FieldLogger) (*telemetry.Telemetry, error) {
	tel, err := telemetry.New(context.Background(), telemetry.Options{Service: "autoglm", Version: cfg.Version,
		Instance: cfg.NodeID, OnError: func(err error) { log.WithError(err).Warn("trace export") }})
	if err != nil {
		return nil, err
	}
	if endpoint, _, _ := telemetry.Endpoint(nil); tel.Enabled() {
		log.WithField("endpoint", endpoint).Info("tracing: exporting spans over OTLP")
	}
	return tel, nil
}

// MemoryDeps runs a replica in process on store, broker and state:
// replicas given the same three form one cluster. Broadcasts reach every
// replica of the broker; tasks are delivered by state, each to one replica
// (inmem.State.Subscribe). The replica is always ready.
func MemoryDeps(store *inmem.Store, broker *inmem.Broker, state *inmem.State) Deps {
	return Deps{
		Store:    store,
		Bus:      broker,
		Receive:  broker.Join,
		Probe:    alwaysReady{},
		Features: &Features{State: state, Subscribe: state.Subscribe},
		Close:    func() {},
	}
}

// alwaysReady is the probe of in-process adapters: they cannot go away.
type alwaysReady struct{}

func (alwaysReady) Ready() bool { return true }

func (alwaysReady) Run(context.Context) {}
