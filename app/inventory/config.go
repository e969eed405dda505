// Package inventory is the stock service of the order/inventory saga, a
// Dapr app of its own (app id "inventory") beside the sync service:
//
//  1. A new order (the integration event com.autoglm.document.created of
//     the orders collection, published by the sync service through Dapr's
//     outbox) arrives on the events pub/sub.
//  2. The service reads the order through Dapr service invocation
//     (/v1.0/invoke/<orders app>/method/v1/docs/orders/{id}) and reserves
//     its items in one state transaction guarded by the ETag of every stock
//     record, so concurrent orders never oversell. The decision is stored
//     with the reservation (first write wins), which makes a redelivered
//     event harmless.
//  3. It publishes StockReserved or StockReservationFailed on its own topic.
//  4. On that event it sets the order's status through the sync service's
//     API: reserved with the reservation id, or rejected with the reason —
//     the compensation. Every step is a change of the order, so a client
//     watching the order sees it live.
//  5. An order a clerk cancels releases its stock.
//
// Its stock records, decisions and outcome events go through the kv port
// (State); the command app/cmd/inventory runs it on the sidecar's state
// store and pub/sub with package daprkv. Configuration (environment):
// INVENTORY_PORT (8090), DAPR_HTTP_PORT
// (3500), DAPR_GRPC_PORT (50001), DAPR_API_TOKEN, APP_API_TOKEN,
// INVENTORY_STORE (inventory), INVENTORY_PUBSUB (events),
// INVENTORY_ORDERS_TOPIC (doc-events), INVENTORY_TOPIC (inventory-events),
// INVENTORY_ORDERS_APP (autoglm).
package inventory

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/sirupsen/logrus"
)

// Config of the inventory service.
type Config struct {
	Port         int
	DaprHTTPPort int
	DaprGRPCPort int
	DaprAPIToken string
	AppAPIToken  string
	Store        string
	Pubsub       string
	OrdersTopic  string
	Topic        string
	OrdersApp    string
}

// ConfigFromEnv reads the configuration from the environment (lookup is
// os.LookupEnv) over the defaults.
func ConfigFromEnv(lookup func(string) (string, bool)) (Config, error) {
	c := Config{Port: 8090, DaprHTTPPort: 3500, DaprGRPCPort: 50001, Store: "inventory", Pubsub: "events",
		OrdersTopic: "doc-events", Topic: "inventory-events", OrdersApp: "autoglm"}
	str := func(name string, dst *string) {
		if v, ok := lookup(name); ok && v != "" {
			*dst = v
		}
	}
	var err error
	num := func(name string, dst *int) {
		if v, ok := lookup(name); ok && v != "" {
			n, e := strconv.Atoi(v)
			if e != nil || n <= 0 {
				err = errors.Join(err, fmt.Errorf("%s=%q: want a port number", name, v))
				return
			}
			*dst = n
		}
	}
	num("INVENTORY_PORT", &c.Port)
	num("DAPR_HTTP_PORT", &c.DaprHTTPPort)
	num("DAPR_GRPC_PORT", &c.DaprGRPCPort)
	str("DAPR_API_TOKEN", &c.DaprAPIToken)
	str("APP_API_TOKEN", &c.AppAPIToken)
	str("INVENTORY_STORE", &c.Store)
	str("INVENTORY_PUBSUB", &c.Pubsub)
	str("INVENTORY_ORDERS_TOPIC", &c.OrdersTopic)
	str("INVENTORY_TOPIC", &c.Topic)
	str("INVENTORY_ORDERS_APP", &c.OrdersApp)
	return c, err
}

// Run serves the inventory service on state (New) on cfg.Port until ctx
// ends.
func Run(ctx context.Context, cfg Config, state State, log logrus.FieldLogger) error {
	ln, err := net.Listen("tcp", ":"+strconv.Itoa(cfg.Port))
	if err != nil {
		return err
	}
	svc := New(cfg, state, log)
	srv := &http.Server{Handler: svc.Handler(), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	log.WithField("addr", ln.Addr().String()).Info("inventory listening")
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}
