// Package daprtest starts real replicas for integration tests: the service
// in-process on a free port beside a real daprd with a rendered component
// profile (local: SQLite + in-memory pub/sub; redis: the machine's Redis;
// postgres: the machine's PostgreSQL and NATS JetStream). On failure it dumps
// daprd's log. A missing daprd or backing service fails the test; only
// `go test -short` outside CI skips it.
package daprtest

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	dapr "github.com/dapr/go-sdk/client"
	"github.com/google/uuid"
	"github.com/sirupsen/logrus"

	"github.com/open-autoglm/autoglm/app/config"
	"github.com/open-autoglm/autoglm/app/daprdeps"
	"github.com/open-autoglm/autoglm/app/internal/cluster/backend"
	"github.com/open-autoglm/autoglm/app/internal/daprrun"
	"github.com/open-autoglm/autoglm/app/internal/testutil"
	"github.com/open-autoglm/autoglm/app/protocol"
	"github.com/open-autoglm/autoglm/app/service"
)

// Profiles are the component profiles the core suite runs against.
var Profiles = []string{"local", "redis", "postgres"}

// EachProfile runs f on a replica of each profile in Profiles, each a
// parallel subtest named after its profile.
func EachProfile(t *testing.T, f func(t *testing.T, r *Replica)) {
	for _, p := range Profiles {
		t.Run(p, func(t *testing.T) {
			t.Parallel()
			f(t, Start(t, Options{Profile: p}))
		})
	}
}

// OnProfiles runs f on a replica of each of profiles, one subtest after
// another, each named after its profile.
func OnProfiles(t *testing.T, profiles []string, f func(t *testing.T, r *Replica)) {
	for _, p := range profiles {
		t.Run(p, func(t *testing.T) { f(t, Start(t, Options{Profile: p})) })
	}
}

// Integration fails or skips a test that needs real infrastructure: it
// skips only under -short outside CI.
func Integration(t testing.TB) {
	t.Helper()
	if testing.Short() {
		if os.Getenv("CI") != "" {
			t.Fatal("integration tests must run in CI: drop -short")
		}
		t.Skip("integration test (needs daprd); skipped by -short")
	}
}

// Options for a replica.
type Options struct {
	Profile string // local (default), redis or postgres
	// Topic isolates the broadcast of one test from others on a shared
	// broker; replicas of one cluster must share it.
	Topic   string
	DataDir string // local profile: SQLite folder (shared across restarts)
	Config  func(*config.Config)
}

// Replica is the service plus its daprd.
type Replica struct {
	t       testing.TB
	opt     Options
	AppPort int
	Sidecar *daprrun.Sidecar
	Svc     *service.Service
	Cfg     config.Config
	resDir  string
	log     *testutil.Buffer
	// The replica's DAPR_API_TOKEN and APP_API_TOKEN, the same across
	// restarts.
	daprToken, appToken string
}

// Profile is the replica's component profile.
func (r *Replica) Profile() string { return r.opt.Profile }

// URL is the app's base URL.
func (r *Replica) URL() string { return fmt.Sprintf("http://127.0.0.1:%d", r.AppPort) }

// WSURL is the sync endpoint.
func (r *Replica) WSURL() string { return protocol.SyncURL(r.URL()) }

// DaprURL is daprd's HTTP API.
func (r *Replica) DaprURL() string { return r.Sidecar.HTTPURL() }

// Start starts a replica and waits until it is ready; it is stopped when
// the test ends. The app and its daprd share API tokens generated for the
// replica (Cfg.DaprAPIToken, Cfg.AppAPIToken).
func Start(t testing.TB, opt Options) *Replica {
	t.Helper()
	Integration(t)
	if opt.Profile == "" {
		opt.Profile = "local"
	}
	if opt.Topic == "" {
		opt.Topic = "changes-" + uuid.NewString()[:8]
	}
	if opt.DataDir == "" {
		opt.DataDir = t.TempDir()
	}
	Backends(t, opt.Profile)
	prepare(t, opt.Profile, opt.Topic)
	root, err := daprrun.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	res := t.TempDir()
	vars := backend.Vars(opt.Profile, opt.DataDir, opt.Topic)
	if err := daprrun.Render(filepath.Join(root, "components", opt.Profile), res, vars); err != nil {
		t.Fatalf("render components: %v", err)
	}
	port, err := daprrun.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	r := &Replica{t: t, opt: opt, AppPort: port, resDir: res, log: &testutil.Buffer{Max: 4 << 20},
		daprToken: daprrun.NewToken(), appToken: daprrun.NewToken()}
	r.start()
	t.Cleanup(func() {
		if t.Failed() {
			r.DumpLog()
		}
		r.Stop()
	})
	return r
}

// prepared counts the replicas using each topic's broker resources (the
// JetStream streams of the postgres profile), so the last one to stop
// removes them.
var prepared = struct {
	sync.Mutex
	n map[string]int
}{n: map[string]int{}}

// Backends fails the test unless the services profile needs answer. On
// postgres it holds the backends lock shared until the test ends: fault
// tests restart PostgreSQL and pause NATS under an exclusive hold of it.
func Backends(t testing.TB, profile string) {
	t.Helper()
	if err := backend.Require(profile); err != nil {
		t.Fatal(err)
	}
	if profile == "postgres" {
		release, err := backend.Share(5 * time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(release)
	}
}

func prepare(t testing.TB, profile, topic string) {
	t.Helper()
	if err := backend.Prepare(profile, topic); err != nil {
		t.Fatal(err)
	}
	key := profile + "/" + topic
	prepared.Lock()
	prepared.n[key]++
	prepared.Unlock()
	t.Cleanup(func() {
		prepared.Lock()
		prepared.n[key]--
		last := prepared.n[key] == 0
		prepared.Unlock()
		if last {
			_ = backend.Discard(profile, topic)
		}
	})
}

func (r *Replica) start() {
	r.t.Helper()
	for attempt := 1; r.startOnce(attempt < 3); attempt++ {
		// Another process took one of daprd's ports between our picking and
		// daprd binding it: stop and try again with new ones.
		r.Stop()
	}
}

// startOnce starts the service and daprd; it reports a lost port race
// (when retry allows) instead of failing the test.
func (r *Replica) startOnce(retry bool) (raced bool) {
	t := r.t
	t.Helper()
	daprd, err := daprrun.Daprd()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := listenRetry(r.AppPort)
	if err != nil {
		t.Fatal(err)
	}
	httpPort, _ := daprrun.FreePort()
	grpcPort, _ := daprrun.FreePort()
	cfg := config.Default()
	cfg.Port, cfg.DaprHTTPPort, cfg.DaprGRPCPort = r.AppPort, httpPort, grpcPort
	cfg.BroadcastTopic = r.opt.Topic
	cfg.NodeID = fmt.Sprintf("test-%d", r.AppPort)
	cfg.Version = "test"
	cfg.Heartbeat = 2 * time.Second
	cfg.ProbeInterval = 100 * time.Millisecond
	// Every replica runs as deployed: daprd and the app require each
	// other's token (Options.Config may replace them).
	cfg.DaprAPIToken, cfg.AppAPIToken = r.daprToken, r.appToken
	if root, err := daprrun.RepoRoot(); err == nil {
		cfg.Collections = filepath.Join(root, "config", "collections.yaml")
	}
	if r.opt.Config != nil {
		r.opt.Config(&cfg)
	}
	r.Cfg = cfg
	svc := Serve(t, cfg, r.log, ln)
	r.Svc = svc
	sc, err := r.runSidecar(daprd)
	if err != nil {
		t.Fatal(err)
	}
	r.Sidecar = sc
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := sc.WaitHealthy(ctx); err != nil {
		if retry && daprrun.PortRaceLost(r.log.String()) {
			return true
		}
		r.DumpLog()
		t.Fatal(err)
	}
	for !svc.Ready() {
		select {
		case <-ctx.Done():
			r.DumpLog()
			t.Fatal("app did not become ready")
		case <-time.After(20 * time.Millisecond):
		}
	}
	return false
}

// Serve builds the Dapr-backed service of cfg, logging at info level to
// out, and starts it on ln (nil: on cfg's host and port); a failure fails
// the test. Shutting it down is the caller's.
func Serve(t testing.TB, cfg config.Config, out io.Writer, ln net.Listener) *service.Service {
	t.Helper()
	log := logrus.New()
	log.SetOutput(out)
	log.SetLevel(logrus.InfoLevel)
	svc, err := daprdeps.NewService(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Start(ln); err != nil {
		t.Fatal(err)
	}
	return svc
}

func (r *Replica) runSidecar(daprd string) (*daprrun.Sidecar, error) {
	return daprrun.Start(daprrun.Options{
		Daprd: daprd, AppID: config.DefaultAppID, AppPort: r.AppPort, HTTPPort: r.Cfg.DaprHTTPPort, GRPCPort: r.Cfg.DaprGRPCPort,
		ResourcesDir: r.resDir, Dir: r.opt.DataDir, Output: r.log, LogLevel: "info",
		APIToken: r.Cfg.DaprAPIToken, AppAPIToken: r.Cfg.AppAPIToken,
	})
}

// StopSidecar stops daprd (graceful) and leaves the app running: the app
// answers as it does when its sidecar is gone.
func (r *Replica) StopSidecar() {
	if r.Sidecar != nil {
		_ = r.Sidecar.Stop(10 * time.Second)
		r.Sidecar = nil
	}
}

// StartSidecar starts daprd again on the same ports and components and
// waits until it is healthy.
func (r *Replica) StartSidecar() {
	r.t.Helper()
	daprd, err := daprrun.Daprd()
	if err != nil {
		r.t.Fatal(err)
	}
	sc, err := r.runSidecar(daprd)
	if err != nil {
		r.t.Fatal(err)
	}
	r.Sidecar = sc
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := sc.WaitHealthy(ctx); err != nil {
		r.DumpLog()
		r.t.Fatal(err)
	}
}

// Stop stops app and daprd (graceful).
func (r *Replica) Stop() {
	if r.Svc != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_ = r.Svc.Shutdown(ctx)
		cancel()
		r.Svc = nil
	}
	if r.Sidecar != nil {
		_ = r.Sidecar.Stop(10 * time.Second)
		r.Sidecar = nil
	}
}

// Restart stops both processes and starts them again on the same app port
// and data.
func (r *Replica) Restart() {
	r.t.Helper()
	r.Stop()
	r.start()
}

// DaprClient connects a Dapr client to the replica's sidecar (with its API
// token, if any); it is closed when the test ends.
func (r *Replica) DaprClient(t testing.TB) dapr.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := dapr.NewClientWithAddressContext(ctx, fmt.Sprintf("127.0.0.1:%d", r.Cfg.DaprGRPCPort))
	if err != nil {
		t.Fatal(err)
	}
	if r.Cfg.DaprAPIToken != "" {
		c.WithAuthToken(r.Cfg.DaprAPIToken)
	}
	t.Cleanup(c.Close)
	return c
}

// DumpLog writes the app's and daprd's output to the test log.
func (r *Replica) DumpLog() {
	r.t.Logf("---- replica :%d log (app + daprd) ----\n%s", r.AppPort, r.log.String())
}

func listenRetry(port int) (net.Listener, error) {
	var err error
	for i := 0; i < 50; i++ {
		var ln net.Listener
		ln, err = net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			return ln, nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return nil, err
}
