// Command saga-dev runs the order/inventory saga on this machine without
// the Dapr CLI (make run-saga): the sync service (bin/autoglm, app id
// autoglm) and the inventory service (bin/inventory, app id inventory), each
// beside its own daprd, on the components/saga profile (SQLite with Dapr's
// outbox, integration events over the machine's Redis). Each app and its
// daprd share two API tokens generated for the run. Ctrl-C stops
// everything.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/open-autoglm/autoglm/app/internal/daprrun"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "saga-dev:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("saga-dev", flag.ContinueOnError)
	dataDir := fs.String("data", "data/saga", "data directory (SQLite files, rendered components, logs)")
	redis := fs.String("redis", "127.0.0.1:6379", "Redis for the integration events")
	port := fs.Int("port", 8080, "sync service port")
	invPort := fs.Int("inventory-port", 8090, "inventory service port")
	logLevel := fs.String("dapr-log-level", "warn", "daprd log level")
	if err := fs.Parse(args); err != nil {
		return err
	}
	root, err := daprrun.RepoRoot()
	if err != nil {
		return err
	}
	data, err := filepath.Abs(*dataDir)
	if err != nil {
		return err
	}
	res := filepath.Join(data, "resources")
	if err := os.RemoveAll(res); err != nil {
		return err
	}
	vars := map[string]string{"DATA_DIR": data, "REDIS_HOST": *redis, "AUTOGLM_APP_ID": "autoglm",
		"INVENTORY_APP_ID": "inventory", "EVENTS_TOPIC": "doc-events"}
	if err := daprrun.Render(filepath.Join(root, "components", "saga"), res, vars); err != nil {
		return fmt.Errorf("render components: %w", err)
	}
	// Service invocation resolves app ids with mDNS; announce loopback.
	os.Setenv("DAPR_HOST_IP", "127.0.0.1")

	var running []*daprrun.Pair
	defer func() {
		for i := len(running) - 1; i >= 0; i-- {
			running[i].Stop()
		}
		fmt.Println("stopped")
	}()
	start := func(name, appID, bin string, appPort, httpPort, grpcPort int, env []string) error {
		logFile := filepath.Join(data, name+"-daprd.log")
		p, err := daprrun.StartPair(ctx, daprrun.PairOptions{
			Name: name, Bin: filepath.Join(root, bin), Env: env, Out: os.Stderr, LogFile: logFile,
			Sidecar: daprrun.Options{AppID: appID, AppPort: appPort, HTTPPort: httpPort, GRPCPort: grpcPort,
				ResourcesDir: res, LogLevel: *logLevel,
				Args: []string{"--dapr-internal-grpc-listen-address", "127.0.0.1"}},
		})
		if err != nil {
			return err
		}
		running = append(running, p)
		tokens := filepath.Join(data, name+"-tokens.env")
		if err := p.WriteTokens(tokens); err != nil {
			return err
		}
		fmt.Printf("%s ready: app http://127.0.0.1:%d, daprd http://127.0.0.1:%d (log %s, API tokens %s)\n", name, appPort, p.Sidecar.HTTPPort, logFile, tokens)
		return nil
	}
	if err := start("autoglm", "autoglm", "bin/autoglm", *port, 3500, 50001, []string{
		"AUTOGLM_PORT=" + strconv.Itoa(*port), "AUTOGLM_APP_ID=autoglm", "AUTOGLM_NODE_ID=saga",
		"AUTOGLM_COLLECTIONS=" + filepath.Join(root, "config", "collections.yaml"), "AUTOGLM_EVENTS_TOPIC=doc-events",
	}); err != nil {
		return err
	}
	// The inventory's sidecar takes any free ports (0): only its app port is
	// used from outside.
	if err := start("inventory", "inventory", "bin/inventory", *invPort, 0, 0, []string{
		"INVENTORY_PORT=" + strconv.Itoa(*invPort), "INVENTORY_ORDERS_APP=autoglm", "INVENTORY_ORDERS_TOPIC=doc-events",
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
Watch an order live on ws://127.0.0.1:%[1]d/v1/sync (docs/protocol.md). Press Ctrl-C to stop.
`, *port, *invPort)

	return daprrun.Supervise(ctx, running)
}
