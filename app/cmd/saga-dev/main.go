// Command saga-dev runs the order/inventory saga on this machine without
// the Dapr CLI (make run-saga): the sync service (bin/autoglm, app id
// autoglm) and the inventory service (bin/inventory, app id inventory), each
// beside its own daprd, on the components/saga profile (SQLite with Dapr's
// outbox, integration events over the machine's Redis). Each app and its
// daprd share two API tokens generated for the run. The sidecars find
// each other with Dapr's SQLite name resolver in the data directory
// (config/daprd.yaml), never another developer's instance with the same app
// ids. Ctrl-C stops everything.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/open-autoglm/autoglm/app/config"
	"github.com/open-autoglm/autoglm/app/internal/cmdmain"
	"github.com/open-autoglm/autoglm/app/internal/daprrun"
	"github.com/open-autoglm/autoglm/app/protocol"
)

func main() { cmdmain.Run("saga-dev", run) }

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("saga-dev", flag.ContinueOnError)
	dataDir := fs.String("data", "data/saga", "data directory (SQLite files, rendered components, logs)")
	redis := fs.String("redis", "127.0.0.1:6379", "Redis for the integration events")
	appID := fs.String("app-id", config.DefaultAppID, "Dapr app id of the sync service")
	invID := fs.String("inventory-app-id", "inventory", "Dapr app id of the inventory service")
	port := fs.Int("port", config.DefaultPort, "sync service port")
	invPort := fs.Int("inventory-port", 8090, "inventory service port")
	daprPort := fs.Int("dapr-http-port", config.DefaultDaprHTTPPort, "the sync service's daprd HTTP port")
	grpcPort := fs.Int("dapr-grpc-port", config.DefaultDaprGRPCPort, "the sync service's daprd gRPC port")
	metricsPort := fs.Int("dapr-metrics-port", config.DefaultDaprMetricsPort, "the sync service's daprd metrics port")
	daprConfig := fs.String("dapr-config", "config/daprd.yaml", "Dapr Configuration for the sidecars (name resolution)")
	logLevel := fs.String("dapr-log-level", "warn", "daprd log level")
	if err := fs.Parse(args); err != nil {
		return err
	}
	explicit := cmdmain.Explicit(fs)
	dev, err := daprrun.OpenDevRun(*dataDir, os.Stdout)
	if err != nil {
		return err
	}
	defer dev.Close()
	root, data := dev.Root, dev.Data
	dev.InRoot(daprConfig)
	// The inventory's sidecar takes any free ports: only its app port is
	// used from outside.
	var ports daprrun.Ports
	for _, p := range []struct {
		dst        *int
		what, name string
	}{
		{port, "sync service", "port"}, {invPort, "inventory service", "inventory-port"}, {daprPort, "daprd HTTP", "dapr-http-port"},
		{grpcPort, "daprd gRPC", "dapr-grpc-port"}, {metricsPort, "daprd metrics", "dapr-metrics-port"},
	} {
		if *p.dst, err = ports.Pick(p.what, *p.dst, explicit[p.name]); err != nil {
			return err
		}
	}
	for _, n := range ports.Notes {
		fmt.Println(n)
	}
	res := filepath.Join(data, "resources")
	if err := os.RemoveAll(res); err != nil {
		return err
	}
	vars := map[string]string{"DATA_DIR": data, "REDIS_HOST": *redis, "AUTOGLM_APP_ID": *appID,
		"INVENTORY_APP_ID": *invID, "EVENTS_TOPIC": "doc-events"}
	if err := daprrun.Render(filepath.Join(root, "components", "saga"), res, vars); err != nil {
		return fmt.Errorf("render components: %w", err)
	}
	start := func(name, appID, bin string, appPort, httpPort, grpcPort, metricsPort int, node string, env []string) error {
		logFile := filepath.Join(data, name+"-daprd.log")
		tokens := filepath.Join(data, name+"-tokens.env")
		p, err := dev.Start(ctx, daprrun.PairOptions{
			Name: name, Bin: filepath.Join(root, bin), Env: env, Out: os.Stderr, LogFile: logFile, NodeID: node,
			Sidecar: daprrun.Options{AppID: appID, AppPort: appPort, HTTPPort: httpPort, GRPCPort: grpcPort,
				MetricsPort: metricsPort, ResourcesDir: res, Dir: data, ConfigFile: *daprConfig, LogLevel: *logLevel,
				Env: daprrun.LoopbackEnv, Args: daprrun.LoopbackArgs},
		}, tokens)
		if err != nil {
			return err
		}
		fmt.Printf("%s ready: app http://127.0.0.1:%d, daprd http://127.0.0.1:%d (log %s, API tokens %s)\n", name, appPort, p.Sidecar.HTTPPort, logFile, tokens)
		return nil
	}
	node := "saga-" + daprrun.NewToken()[:8]
	if err := start("autoglm", *appID, "bin/autoglm", *port, *daprPort, *grpcPort, *metricsPort, node, []string{
		"AUTOGLM_PORT=" + strconv.Itoa(*port), "AUTOGLM_APP_ID=" + *appID, "AUTOGLM_NODE_ID=" + node,
		"AUTOGLM_COLLECTIONS=" + filepath.Join(root, "config", "collections.yaml"), "AUTOGLM_EVENTS_TOPIC=doc-events",
	}); err != nil {
		return err
	}
	if err := start("inventory", *invID, "bin/inventory", *invPort, 0, 0, 0, "", []string{
		"INVENTORY_PORT=" + strconv.Itoa(*invPort), "INVENTORY_ORDERS_APP=" + *appID, "INVENTORY_ORDERS_TOPIC=doc-events",
	}); err != nil {
		return err
	}
	fmt.Printf(`
The saga is running. Try it:
  curl -s -X PUT localhost:%[2]d/v1/stock/apple -d '{"qty":3}'
  curl -s -X PUT localhost:%[1]d/v1/docs/orders/o1 -H 'X-Roles: clerk' -H 'Content-Type: application/json' \
       -d '{"customer":"ann","items":[{"sku":"apple","qty":2}],"total":4,"currency":"EUR","status":"pending"}'
  curl -s localhost:%[1]d/v1/docs/orders/o1      # a second later: "status":"reserved"
  curl -s localhost:%[2]d/v1/stock/apple          # {"qty":1}
Watch an order live on %[3]s (docs/protocol.md). Press Ctrl-C to stop.
`, *port, *invPort, protocol.SyncURL("http://127.0.0.1:"+strconv.Itoa(*port)))

	return dev.Supervise(ctx)
}
