package inventory

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/sirupsen/logrus"

	"github.com/open-autoglm/autoglm/app/config"
	"github.com/open-autoglm/autoglm/app/daprdeps"
	"github.com/open-autoglm/autoglm/app/daprkv"
	"github.com/open-autoglm/autoglm/app/internal/cluster/backend"
	"github.com/open-autoglm/autoglm/app/internal/daprrun"
	"github.com/open-autoglm/autoglm/app/internal/daprtest"
	"github.com/open-autoglm/autoglm/app/internal/rest"
	"github.com/open-autoglm/autoglm/app/internal/testutil"
	"github.com/open-autoglm/autoglm/app/service"
)

// Service invocation between the sidecars resolves app ids with mDNS;
// announcing the loopback address keeps it on this machine. App ids are
// unique per test, so concurrently running tests never resolve each
// other's sidecars.
func TestMain(m *testing.M) {
	os.Setenv("DAPR_HOST_IP", "127.0.0.1")
	os.Exit(m.Run())
}

// env is the saga profile running in this test: the sync service and its
// sidecar, the inventory service and its sidecar, and optionally an event
// sink (a third app subscribed to the integration events).
type env struct {
	t                *testing.T
	id               string
	AutoglmID, InvID string
	Topic            string
	dataDir, res     string
	log              *testutil.Buffer
	SvcPort, InvPort int
	svcHTTP, svcGRPC int
	// The sync service's DAPR_API_TOKEN and APP_API_TOKEN, kept across
	// restarts.
	svcDaprToken, svcAppToken string
	Svc                       *service.Service
	SvcSidecar                *daprrun.Sidecar
	InvSidecar                *daprrun.Sidecar
	invSrv                    *http.Server
	Sink                      *sink
	sinkSrv                   *http.Server
	sinkSidecar               *daprrun.Sidecar
	redisState                bool
	stopped                   bool
}

type envOptions struct {
	Inventory  bool // start the inventory service
	Sink       bool // start an event sink
	RedisState bool // the sync service's state on Redis (no outbox): events from post-commit tasks
}

func startEnv(t *testing.T, o envOptions) *env {
	t.Helper()
	daprtest.Integration(t)
	if err := backend.Require("redis"); err != nil {
		t.Fatal(err)
	}
	id := uuid.NewString()[:8]
	e := &env{t: t, id: id, AutoglmID: "autoglm-" + id, InvID: "inventory-" + id, Topic: "doc-events-" + id,
		dataDir: t.TempDir(), res: t.TempDir(), log: &testutil.Buffer{}, redisState: o.RedisState,
		svcDaprToken: daprrun.NewToken(), svcAppToken: daprrun.NewToken()}
	root, err := daprrun.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	vars := map[string]string{"DATA_DIR": e.dataDir, "REDIS_HOST": backend.RedisAddr(), "AUTOGLM_APP_ID": e.AutoglmID,
		"INVENTORY_APP_ID": e.InvID, "EVENTS_TOPIC": e.Topic}
	if err := daprrun.Render(filepath.Join(root, "components", "saga"), e.res, vars); err != nil {
		t.Fatal(err)
	}
	if o.RedisState {
		// The same service on Redis state: no outbox component.
		must(t, os.Remove(filepath.Join(e.res, "outbox.yaml")))
		must(t, os.WriteFile(filepath.Join(e.res, "statestore.yaml"), []byte(fmt.Sprintf(`apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: statestore
spec:
  type: state.redis
  version: v1
  metadata:
    - name: redisHost
      value: %q
scopes:
  - %q
`, backend.RedisAddr(), e.AutoglmID)), 0o644))
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("---- saga log ----\n%s", e.log.String())
		}
		e.stop()
		_, _ = backend.Redis(backend.RedisAddr(), "DEL", e.Topic, "inventory-events-"+id,
			"default"+e.AutoglmID+e.Topic+"outbox")
	})
	e.SvcPort = freePort(t)
	e.svcHTTP, e.svcGRPC = freePort(t), freePort(t)
	e.startService()
	if o.Inventory {
		e.startInventory()
	}
	if o.Sink {
		e.startSink()
	}
	return e
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func freePort(t *testing.T) int {
	p, err := daprrun.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func (e *env) URL() string { return "http://127.0.0.1:" + strconv.Itoa(e.SvcPort) }

// sidecar starts daprd for an app; daprToken and appToken are the API
// tokens it requires and presents ("" for none).
func (e *env) sidecar(appID string, appPort, httpPort, grpcPort int, daprToken, appToken string) *daprrun.Sidecar {
	e.t.Helper()
	var sc *daprrun.Sidecar
	var err error
	for attempt := 0; ; attempt++ {
		sc, err = daprrun.Start(daprrun.Options{AppID: appID, AppPort: appPort, HTTPPort: httpPort, GRPCPort: grpcPort,
			ResourcesDir: e.res, Output: e.log, LogLevel: "info", APIToken: daprToken, AppAPIToken: appToken,
			Args: []string{"--dapr-internal-grpc-listen-address", "127.0.0.1"}})
		if err != nil {
			e.t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		err = sc.WaitHealthy(ctx)
		cancel()
		if err == nil {
			return sc
		}
		_ = sc.Stop(time.Second)
		if attempt >= 2 {
			e.t.Fatalf("%s sidecar: %v", appID, err)
		}
	}
}

func (e *env) startService() {
	t := e.t
	root, _ := daprrun.RepoRoot()
	cfg := config.Default()
	cfg.Port, cfg.DaprHTTPPort, cfg.DaprGRPCPort = e.SvcPort, e.svcHTTP, e.svcGRPC
	cfg.DaprAPIToken, cfg.AppAPIToken = e.svcDaprToken, e.svcAppToken
	cfg.AppID = e.AutoglmID
	cfg.NodeID = "saga-" + e.id
	cfg.Version = "test"
	cfg.BroadcastTopic = "changes-" + e.id
	cfg.TasksTopic = "tasks-" + e.id
	cfg.EventsTopic = e.Topic
	cfg.ProbeInterval = 100 * time.Millisecond
	cfg.CompactionInterval = 0
	cfg.Collections = filepath.Join(root, "config", "collections.yaml")
	log := logrus.New()
	log.SetOutput(e.log)
	svc, err := daprdeps.NewService(cfg, log)
	must(t, err)
	var ln net.Listener
	testutil.Within(5*time.Second, func() bool { ln, err = net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(e.SvcPort)); return err == nil })
	must(t, err)
	must(t, svc.Start(ln))
	e.Svc = svc
	e.SvcSidecar = e.sidecar(e.AutoglmID, e.SvcPort, e.svcHTTP, e.svcGRPC, e.svcDaprToken, e.svcAppToken)
	testutil.Eventually(t, 30*time.Second, "sync service ready", svc.Ready)
	e.stopped = false
}

// stopService ends the sync service and its sidecar; crash kills the
// sidecar (SIGKILL) instead of stopping it.
func (e *env) stopService(crash bool) {
	if e.stopped {
		return
	}
	e.stopped = true
	if crash {
		e.SvcSidecar.Kill()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	_ = e.Svc.Shutdown(ctx)
	cancel()
	if !crash {
		_ = e.SvcSidecar.Stop(10 * time.Second)
	}
}

func (e *env) startInventory() {
	t := e.t
	e.InvPort = freePort(t)
	httpPort, grpcPort := freePort(t), freePort(t)
	log := logrus.New()
	log.SetOutput(e.log)
	daprToken, appToken := daprrun.NewToken(), daprrun.NewToken()
	state, err := daprkv.Dial(grpcPort, daprToken, "inventory", "")
	must(t, err)
	t.Cleanup(func() { _ = state.Close() })
	inv := New(Config{Port: e.InvPort, DaprHTTPPort: httpPort, DaprGRPCPort: grpcPort, Store: "inventory",
		DaprAPIToken: daprToken, AppAPIToken: appToken,
		Pubsub: "events", OrdersTopic: e.Topic, Topic: "inventory-events-" + e.id, OrdersApp: e.AutoglmID}, state, log)
	ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(e.InvPort))
	must(t, err)
	e.invSrv = &http.Server{Handler: inv.Handler()}
	go func() { _ = e.invSrv.Serve(ln) }()
	e.InvSidecar = e.sidecar(e.InvID, e.InvPort, httpPort, grpcPort, daprToken, appToken)
	e.waitSubscribed(e.InvID)
}

// waitSubscribed waits until appID's sidecar logged its subscriptions.
func (e *env) waitSubscribed(appID string) {
	testutil.Eventually(e.t, 30*time.Second, appID+" subscribed", func() bool {
		for _, line := range strings.Split(e.log.String(), "\n") {
			if strings.Contains(line, "app is subscribed") && strings.Contains(line, "app_id="+appID+" ") {
				return true
			}
		}
		return false
	})
}

func (e *env) stop() {
	if e.sinkSidecar != nil {
		_ = e.sinkSidecar.Stop(10 * time.Second)
		_ = e.sinkSrv.Close()
	}
	if e.InvSidecar != nil {
		_ = e.InvSidecar.Stop(10 * time.Second)
		_ = e.invSrv.Close()
	}
	e.stopService(false)
}

// sink records the integration events delivered to it.
type sink struct {
	mu     sync.Mutex
	events []map[string]any
}

func (s *sink) all() []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]map[string]any(nil), s.events...)
}

// of returns the events about one document.
func (s *sink) of(doc string) []map[string]any {
	var out []map[string]any
	for _, ev := range s.all() {
		if ev["subject"] == doc {
			out = append(out, ev)
		}
	}
	return out
}

func (e *env) startSink() {
	t := e.t
	e.Sink = &sink{}
	port := freePort(t)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /dapr/subscribe", func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode([]map[string]string{{"pubsubname": "events", "topic": e.Topic, "route": "/sink"}})
	})
	mux.HandleFunc("POST /sink", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var ev map[string]any
		if err := json.Unmarshal(b, &ev); err != nil {
			t.Errorf("sink: %s: %v", b, err)
		}
		e.Sink.mu.Lock()
		e.Sink.events = append(e.Sink.events, ev)
		e.Sink.mu.Unlock()
		_, _ = w.Write([]byte(`{"status":"SUCCESS"}`))
	})
	ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
	must(t, err)
	e.sinkSrv = &http.Server{Handler: mux}
	go func() { _ = e.sinkSrv.Serve(ln) }()
	e.sinkSidecar = e.sidecar("sink-"+e.id, port, freePort(t), freePort(t), "", "")
	e.waitSubscribed("sink-" + e.id)
}

// do sends a request; an error sending it fails the test.
var do = rest.Must
