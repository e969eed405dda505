// Command autoglm-dev runs the service on this machine without the Dapr
// CLI: for each replica it renders a component profile, starts bin/autoglm
// and a bin/daprd beside it, waits until both are ready, prints where they
// listen, and stops everything cleanly on Ctrl-C. `make run` and
// `make run-cluster` call it. Each app and its daprd share two API tokens
// generated for the run (written to tokens.env in the replica's run
// folder), so the routes daprd calls refuse anyone else.
//
// Several developers can run it on one machine: every port is a flag, a
// default port that is taken is replaced by a free one (and said so), the
// sidecars resolve app ids with Dapr's SQLite name resolver in the data
// directory (config/daprd.yaml) instead of mDNS, so service invocation
// never reaches another developer's instance, and a replica is reported
// ready only once its app answers /version with the node id of this run,
// directly and through its sidecar.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/open-autoglm/autoglm/app/config"
	"github.com/open-autoglm/autoglm/app/internal/cluster/backend"
	"github.com/open-autoglm/autoglm/app/internal/cmdmain"
	"github.com/open-autoglm/autoglm/app/internal/daprrun"
	"github.com/open-autoglm/autoglm/app/protocol"
)

func main() { cmdmain.Run("autoglm-dev", run) }

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("autoglm-dev", flag.ContinueOnError)
	profile := fs.String("profile", "local", "component profile under components/: local, redis or postgres (PostgreSQL + NATS JetStream; $PG_CONN, $NATS_URL)")
	replicas := fs.Int("replicas", 1, "number of replicas (app + daprd each)")
	dataDir := fs.String("data", "data", "data directory (SQLite files, rendered components, logs); one run at a time per directory")
	appID := fs.String("app-id", config.DefaultAppID, "Dapr app id of the service")
	port := fs.Int("port", config.DefaultPort, "app port of the first replica; the next ones count up")
	daprPort := fs.Int("dapr-http-port", config.DefaultDaprHTTPPort, "daprd HTTP port of the first replica; the next ones count up")
	grpcPort := fs.Int("dapr-grpc-port", config.DefaultDaprGRPCPort, "daprd gRPC port of the first replica; the next ones count up")
	metricsPort := fs.Int("dapr-metrics-port", config.DefaultDaprMetricsPort, "daprd metrics port of the first replica; the next ones count up")
	internalPort := fs.Int("dapr-internal-grpc-port", 0, "daprd-to-daprd gRPC port of the first replica (0: a free port)")
	daprConfig := fs.String("dapr-config", "config/daprd.yaml", "Dapr Configuration for the sidecars (name resolution)")
	appBin := fs.String("app", "bin/autoglm", "service binary")
	redis := fs.String("redis", backend.RedisAddr(), "Redis address (the redis profile; the postgres profile's lock)")
	logLevel := fs.String("dapr-log-level", "warn", "daprd log level")
	collectionsFile := fs.String("collections", "config/collections.yaml", "collections config file (empty: every collection lww)")
	findDaprd := fs.Bool("find-daprd", false, "print the daprd that would be used and exit (non-zero: none found)")
	installedOnly := fs.Bool("installed", false, "with -find-daprd: only an installed daprd (DAPRD, ~/.dapr/bin, PATH), not bin/daprd")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *findDaprd {
		b, err := daprrun.FindDaprd(*installedOnly)
		if err != nil {
			return err
		}
		fmt.Println("using", b)
		return nil
	}
	explicit := cmdmain.Explicit(fs)
	if *profile == "local" && *replicas != 1 {
		return errors.New("the local profile (SQLite + in-memory pub/sub) runs one replica; use -profile redis for a cluster")
	}
	dev, err := daprrun.OpenDevRun(*dataDir, os.Stdout)
	if err != nil {
		return err
	}
	defer dev.Close()
	os.Setenv("REDIS_ADDR", *redis)
	if err := backend.Require(*profile); err != nil {
		return err
	}
	// JetStream streams are not created by Dapr (postgres profile).
	if err := backend.Prepare(*profile, config.DefaultBroadcastTopic); err != nil {
		return err
	}
	root, data := dev.Root, dev.Data
	dev.InRoot(collectionsFile, daprConfig)

	var ports daprrun.Ports
	nonce := daprrun.NewToken()[:8]
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
		pick := func(what, name string, base int) (int, error) {
			want := base
			if base != 0 {
				want = base + i
			}
			return ports.Pick(fmt.Sprintf("replica %d %s", i, what), want, explicit[name])
		}
		var appPort, httpPort, gPort, mPort, iPort int
		for _, p := range []struct {
			dst        *int
			what, name string
			base       int
		}{
			{&appPort, "app", "port", *port}, {&httpPort, "daprd HTTP", "dapr-http-port", *daprPort},
			{&gPort, "daprd gRPC", "dapr-grpc-port", *grpcPort}, {&mPort, "daprd metrics", "dapr-metrics-port", *metricsPort},
			{&iPort, "daprd internal gRPC", "dapr-internal-grpc-port", *internalPort},
		} {
			if *p.dst, err = pick(p.what, p.name, p.base); err != nil {
				return err
			}
		}
		for _, n := range ports.Notes {
			fmt.Println(n)
		}
		ports.Notes = nil
		node := fmt.Sprintf("replica-%d-%s", i, nonce)
		tokens := filepath.Join(rdir, "tokens.env")
		if _, err := dev.Start(ctx, daprrun.PairOptions{
			Name: fmt.Sprintf("replica %d", i), Bin: *appBin, Out: os.Stderr,
			LogFile: filepath.Join(rdir, "daprd.log"), NodeID: node,
			Env: []string{
				"AUTOGLM_PORT=" + strconv.Itoa(appPort),
				"AUTOGLM_APP_ID=" + *appID,
				"AUTOGLM_NODE_ID=" + node,
				"AUTOGLM_COLLECTIONS=" + *collectionsFile,
			},
			Sidecar: daprrun.Options{AppID: *appID, AppPort: appPort, HTTPPort: httpPort,
				GRPCPort: gPort, MetricsPort: mPort, InternalPort: iPort, ResourcesDir: res, Dir: data,
				ConfigFile: *daprConfig, LogLevel: *logLevel, Env: daprrun.LoopbackEnv, Args: daprrun.LoopbackArgs},
		}, tokens); err != nil {
			return err
		}
		app := "http://127.0.0.1:" + strconv.Itoa(appPort)
		fmt.Printf("replica %d ready: app %s  (demo page %s/, WebSocket %s, app id %s, daprd http://127.0.0.1:%d grpc %d metrics %d, log %s, API tokens %s)\n",
			i, app, app, protocol.SyncURL(app), *appID, httpPort, gPort, mPort, filepath.Join(rdir, "daprd.log"), tokens)
	}
	fmt.Printf("profile %s, data in %s. Press Ctrl-C to stop.\n", *profile, data)
	// Stop everything when any process dies on its own.
	return dev.Supervise(ctx)
}
