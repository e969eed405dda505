// Command autoglm-dev runs the service on this machine without the Dapr
// CLI: for each replica it renders a component profile, starts bin/autoglm
// and a bin/daprd beside it, waits until both are ready, prints where they
// listen, and stops everything cleanly on Ctrl-C. `make run` and
// `make run-cluster` call it. Each app and its daprd share two API tokens
// generated for the run (written to tokens.env in the replica's run
// folder), so the routes daprd calls refuse anyone else.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/open-autoglm/autoglm/app/config"
	"github.com/open-autoglm/autoglm/app/internal/cluster/backend"
	"github.com/open-autoglm/autoglm/app/internal/daprrun"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "autoglm-dev:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("autoglm-dev", flag.ContinueOnError)
	profile := fs.String("profile", "local", "component profile under components/: local, redis or postgres (PostgreSQL + NATS JetStream; $PG_CONN, $NATS_URL)")
	replicas := fs.Int("replicas", 1, "number of replicas (app + daprd each)")
	dataDir := fs.String("data", "data", "data directory (SQLite file, rendered components)")
	port := fs.Int("port", config.DefaultPort, "app port of the first replica; the next ones count up")
	daprPort := fs.Int("dapr-http-port", 3500, "daprd HTTP port of the first replica; the next ones count up")
	appBin := fs.String("app", "bin/autoglm", "service binary")
	redis := fs.String("redis", backend.RedisAddr(), "Redis address (the redis profile; the postgres profile's lock)")
	logLevel := fs.String("dapr-log-level", "warn", "daprd log level")
	collectionsFile := fs.String("collections", "config/collections.yaml", "collections config file (empty: every collection lww)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *profile == "local" && *replicas != 1 {
		return errors.New("the local profile (SQLite + in-memory pub/sub) runs one replica; use -profile redis for a cluster")
	}
	os.Setenv("REDIS_ADDR", *redis)
	if err := backend.Require(*profile); err != nil {
		return err
	}
	// JetStream streams are not created by Dapr (postgres profile).
	if err := backend.Prepare(*profile, config.DefaultBroadcastTopic); err != nil {
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
	if *collectionsFile != "" && !filepath.IsAbs(*collectionsFile) {
		*collectionsFile = filepath.Join(root, *collectionsFile)
	}

	var running []*daprrun.Pair
	defer func() {
		for i := len(running) - 1; i >= 0; i-- {
			running[i].Stop()
		}
		fmt.Println("stopped")
	}()
	for i := range *replicas {
		rdir := filepath.Join(data, "run", strconv.Itoa(i))
		res := filepath.Join(rdir, "resources")
		if err := os.RemoveAll(res); err != nil {
			return err
		}
		vars := backend.Vars(*profile, data, config.DefaultBroadcastTopic)
		if err := daprrun.Render(filepath.Join(root, "components", *profile), res, vars); err != nil {
			return fmt.Errorf("render components: %w", err)
		}
		appPort, httpPort := *port+i, *daprPort+i
		p, err := daprrun.StartPair(ctx, daprrun.PairOptions{
			Name: fmt.Sprintf("replica %d", i), Bin: *appBin, Out: os.Stderr,
			LogFile: filepath.Join(rdir, "daprd.log"),
			Env: []string{
				"AUTOGLM_PORT=" + strconv.Itoa(appPort),
				"AUTOGLM_NODE_ID=" + fmt.Sprintf("replica-%d", i),
				"AUTOGLM_COLLECTIONS=" + *collectionsFile,
			},
			Sidecar: daprrun.Options{AppID: config.DefaultAppID, AppPort: appPort, HTTPPort: httpPort,
				GRPCPort: 50001 + i, ResourcesDir: res, LogLevel: *logLevel},
		})
		if err != nil {
			return err
		}
		running = append(running, p)
		tokens := filepath.Join(rdir, "tokens.env")
		if err := p.WriteTokens(tokens); err != nil {
			return err
		}
		fmt.Printf("replica %d ready: app http://127.0.0.1:%d  (WebSocket ws://127.0.0.1:%d/v1/sync, daprd http://127.0.0.1:%d, log %s, API tokens %s)\n",
			i, appPort, appPort, httpPort, filepath.Join(rdir, "daprd.log"), tokens)
	}
	fmt.Printf("profile %s, data in %s. Press Ctrl-C to stop.\n", *profile, data)
	// Stop everything when any process dies on its own.
	return daprrun.Supervise(ctx, running)
}
