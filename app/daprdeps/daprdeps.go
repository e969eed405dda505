// Package daprdeps builds a replica's adapters on its Dapr sidecar: the
// document store, the broadcast, the state port of the task queue,
// webhooks, events and compaction, the outbox and the store's query API,
// all over one gRPC connection to daprd. Package service sees only their
// ports (service.Deps), so it runs as well on the in-process adapters of
// service.MemoryDeps.
package daprdeps

import (
	"context"
	"fmt"
	"net/http"
	"time"

	dapr "github.com/dapr/go-sdk/client"
	"github.com/sirupsen/logrus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"

	"github.com/open-autoglm/autoglm/app/config"
	"github.com/open-autoglm/autoglm/app/daprbus"
	"github.com/open-autoglm/autoglm/app/daprkv"
	"github.com/open-autoglm/autoglm/app/daprquery"
	"github.com/open-autoglm/autoglm/app/daprstore"
	"github.com/open-autoglm/autoglm/app/daprsub"
	"github.com/open-autoglm/autoglm/app/httpapi"
	"github.com/open-autoglm/autoglm/app/internal/daprconn"
	"github.com/open-autoglm/autoglm/app/service"
	"github.com/open-autoglm/autoglm/app/sidecar"
)

// BroadcastRoute is where daprd delivers the change broadcast.
const BroadcastRoute = "/dapr/events/changes"

// NewService builds a replica on its Dapr sidecar (Deps). It does not
// listen yet.
func NewService(cfg config.Config, log logrus.FieldLogger) (*service.Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	deps, err := Deps(cfg, log)
	if err != nil {
		return nil, err
	}
	svc, err := service.New(cfg, log, deps)
	if err != nil {
		deps.Close()
		return nil, err
	}
	return svc, nil
}

// Deps connects to the replica's sidecar (cfg.DaprGRPCPort and
// DaprHTTPPort). The connection is lazy: the app must already listen when
// daprd starts (daprd waits for the app port), and calls fail as
// unavailable until the sidecar answers.
func Deps(cfg config.Config, log logrus.FieldLogger) (service.Deps, error) {
	tel, err := service.NewTelemetry(cfg, log)
	if err != nil {
		return service.Deps{}, err
	}
	// Reconnects back off at most 1s (gRPC's default grows to 2 minutes),
	// so a replica whose sidecar restarted serves within a second of
	// reporting ready again.
	opts := []grpc.DialOption{
		grpc.WithConnectParams(grpc.ConnectParams{MinConnectTimeout: 5 * time.Second,
			Backoff: backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second}}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64 << 20)),
	}
	// Tracing (off unless OTEL_EXPORTER_OTLP_ENDPOINT is set): the state
	// and publish calls become spans in the trace of the op they serve.
	opts = append(opts, tel.DialOptions()...)
	conn, err := daprconn.Dial(cfg.DaprGRPCPort, cfg.DaprAPIToken, opts...)
	if err != nil {
		return service.Deps{}, fmt.Errorf("dapr client: %w", err)
	}
	client := dapr.NewClientWithConnection(conn)
	daprHTTP := fmt.Sprintf("http://127.0.0.1:%d", cfg.DaprHTTPPort) // daprd's HTTP API
	// On state.postgresql the transport stores documents as JSON, which
	// the store's query API reads (package daprquery), when
	// AUTOGLM_QUERY_API is on; off, it only keeps the query markers right.
	transport := daprquery.NewTransport(client, daprHTTP, cfg.DaprAPIToken, cfg.AppID)
	transport.JSON = cfg.QueryAPI
	store := daprstore.New(transport, cfg.StateStore)
	var queries httpapi.StoreQuerier // nil (not a nil *Engine) when the option is off
	if cfg.QueryAPI {
		queries = daprquery.New(daprquery.Options{Client: client, Store: cfg.StateStore, Transport: transport, Lister: store,
			Eligible: func(ctx context.Context, coll string) bool { return !store.OutboxActive(ctx, coll) },
			Log:      log.WithField("component", "daprquery")})
	}
	return service.Deps{
		Store: store,
		Bus:   daprbus.New(client, cfg.BroadcastPubsub, cfg.BroadcastTopic, cfg.NodeID),
		Routes: func(in service.Inbound, subs []daprsub.Subscription) http.Handler {
			return &daprsub.Router{
				Subs: append([]daprsub.Subscription{{
					PubsubName: cfg.BroadcastPubsub, Topic: cfg.BroadcastTopic, Route: BroadcastRoute,
					Handler: &daprbus.Handler{Node: cfg.NodeID, Deliver: in.Changes, DeliverPresence: in.Presence,
						Tracer: in.Tracer, OnError: in.OnError, MaxBytes: 16 << 20},
				}}, subs...),
				Token: cfg.AppAPIToken,
			}
		},
		Probe: &sidecar.Probe{
			URL:      daprHTTP + "/v1.0/healthz/outbound",
			Token:    cfg.DaprAPIToken,
			Interval: cfg.ProbeInterval,
			OnChange: func(ready bool) {
				log.WithField("ready", ready).Info("sidecar readiness changed")
			},
		},
		Features: &service.Features{
			State:   daprkv.New(client, cfg.StateStore, cfg.LockStore),
			Queries: queries,
			UseOutbox: func(events func(string) bool) func(context.Context, string) bool {
				store.UseOutbox(daprstore.Outbox{Store: cfg.OutboxStore, HTTP: daprHTTP,
					Token: cfg.DaprAPIToken, Events: events})
				return store.OutboxActive
			},
		},
		Telemetry: tel,
		Close:     client.Close,
	}, nil
}
