package service

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"time"

	dapr "github.com/dapr/go-sdk/client"
	"github.com/sirupsen/logrus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/open-autoglm/autoglm/app/config"
	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/daprbus"
	"github.com/open-autoglm/autoglm/app/daprkv"
	"github.com/open-autoglm/autoglm/app/daprquery"
	"github.com/open-autoglm/autoglm/app/daprstore"
	"github.com/open-autoglm/autoglm/app/daprsub"
	"github.com/open-autoglm/autoglm/app/inmem"
	"github.com/open-autoglm/autoglm/app/internal/daprconn"
	"github.com/open-autoglm/autoglm/app/kv"
	"github.com/open-autoglm/autoglm/app/sidecar"
	"github.com/open-autoglm/autoglm/app/telemetry"
)

// Deps are the adapters one replica runs on. DaprDeps builds them on the
// replica's sidecar (production); MemoryDeps keeps documents and broadcasts
// in process, so the whole HTTP API runs without daprd.
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
	Queries *daprquery.Engine
}

// DaprDeps connects to the replica's sidecar (cfg.DaprGRPCPort and
// DaprHTTPPort). The connection is lazy: the app must already listen when
// daprd starts (daprd waits for the app port), and calls fail as
// unavailable until the sidecar answers.
func DaprDeps(cfg config.Config, log logrus.FieldLogger) (Deps, error) {
	tel, err := newTelemetry(cfg, log)
	if err != nil {
		return Deps{}, err
	}
	// Reconnects back off at most 1s (gRPC's default grows to 2 minutes),
	// so a replica whose sidecar restarted serves within a second of
	// reporting ready again.
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{MinConnectTimeout: 5 * time.Second,
			Backoff: backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second}}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64 << 20)),
	}
	opts = append(opts, daprconn.WithToken(cfg.DaprAPIToken)...)
	// Tracing (off unless OTEL_EXPORTER_OTLP_ENDPOINT is set): the state
	// and publish calls become spans in the trace of the op they serve.
	opts = append(opts, tel.DialOptions()...)
	conn, err := grpc.NewClient(net.JoinHostPort("127.0.0.1", strconv.Itoa(cfg.DaprGRPCPort)), opts...)
	if err != nil {
		return Deps{}, fmt.Errorf("dapr client: %w", err)
	}
	client := dapr.NewClientWithConnection(conn)
	// On state.postgresql the transport stores documents as JSON, which
	// the store's query API reads (package daprquery), when
	// AUTOGLM_QUERY_API is on; off, it only keeps the query markers right.
	transport := daprquery.NewTransport(client, fmt.Sprintf("http://127.0.0.1:%d", cfg.DaprHTTPPort), cfg.DaprAPIToken, cfg.AppID)
	transport.JSON = cfg.QueryAPI
	store := daprstore.New(transport, cfg.StateStore)
	var queries *daprquery.Engine
	if cfg.QueryAPI {
		queries = daprquery.New(daprquery.Options{Client: client, Store: cfg.StateStore, Transport: transport, Lister: store,
			Eligible: func(ctx context.Context, coll string) bool { return !store.OutboxActive(ctx, coll) },
			Log:      log.WithField("component", "daprquery")})
	}
	return Deps{
		Store: store,
		Bus:   daprbus.New(client, cfg.BroadcastPubsub, cfg.BroadcastTopic, cfg.NodeID),
		Probe: &sidecar.Probe{
			URL:      fmt.Sprintf("http://127.0.0.1:%d/v1.0/healthz/outbound", cfg.DaprHTTPPort),
			Token:    cfg.DaprAPIToken,
			Interval: cfg.ProbeInterval,
			OnChange: func(ready bool) {
				log.WithField("ready", ready).Info("sidecar readiness changed")
			},
		},
		Features: &Features{
			State:   daprkv.New(client, cfg.StateStore, cfg.LockStore),
			Queries: queries,
			UseOutbox: func(events func(string) bool) func(context.Context, string) bool {
				store.UseOutbox(daprstore.Outbox{Store: cfg.OutboxStore, HTTP: fmt.Sprintf("http://127.0.0.1:%d", cfg.DaprHTTPPort),
					Token: cfg.DaprAPIToken, Events: events})
				return store.OutboxActive
			},
		},
		Telemetry: tel,
		Close:     client.Close,
	}, nil
}

// newTelemetry sets tracing up from the environment.
func newTelemetry(cfg config.Config, log logrus.FieldLogger) (*telemetry.Telemetry, error) {
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
