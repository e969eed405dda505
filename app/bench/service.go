package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/open-autoglm/autoglm/app/config"
	"github.com/open-autoglm/autoglm/app/internal/daprrun"
)

// ServiceOptions describe the replica the bench starts.
type ServiceOptions struct {
	Profile string // local or redis
	AppBin  string // bin/autoglm
	DataDir string // fresh directory for the SQLite file and the rendered components
	Redis   string // for the redis profile
	Topic   string // broadcast topic (unique per run, so Redis streams of old runs are not replayed)
	Pprof   string // AUTOGLM_PPROF for the app; empty: off
	// SQLiteSync, when set (NORMAL, FULL, ...), adds PRAGMA synchronous to
	// the local profile's SQLite connection string, to measure what the
	// per-commit fsync costs.
	SQLiteSync string
	// DaprdPprof, when set, is the port of daprd's own profiler.
	DaprdPprof int
	// Env is more environment for the app (e.g. OTEL_*); daprd traces
	// where the app does.
	Env []string
	Log io.Writer
}

// Service is a running app + daprd pair.
type Service struct {
	URL   string
	app   *daprrun.Process
	daprd *daprrun.Sidecar
}

// RaiseFileLimit lifts the soft open-files limit to the hard one, for this
// process and the processes it starts (they inherit it).
func RaiseFileLimit() (uint64, error) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, err
	}
	l.Cur = l.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, err
	}
	return l.Cur, nil
}

// StartService starts the app and its daprd on free ports and waits until
// the app is ready.
func StartService(ctx context.Context, o ServiceOptions) (*Service, error) {
	root, err := daprrun.RepoRoot()
	if err != nil {
		return nil, err
	}
	if o.AppBin == "" {
		o.AppBin = filepath.Join(root, "bin", "autoglm")
	}
	if _, err := os.Stat(o.AppBin); err != nil {
		return nil, fmt.Errorf("app binary: %w (run make build)", err)
	}
	res := filepath.Join(o.DataDir, "resources")
	vars := map[string]string{"DATA_DIR": o.DataDir, "REDIS_HOST": o.Redis}
	if err := daprrun.Render(filepath.Join(root, "components", o.Profile), res, vars); err != nil {
		return nil, fmt.Errorf("render components: %w", err)
	}
	if o.SQLiteSync != "" {
		if err := sqliteSync(filepath.Join(res, "statestore.yaml"), o.SQLiteSync); err != nil {
			return nil, err
		}
	}
	var ports [3]int
	for i := range ports {
		if ports[i], err = daprrun.FreePort(); err != nil {
			return nil, err
		}
	}
	appPort, httpPort, grpcPort := ports[0], ports[1], ports[2]
	// The app and daprd require each other's token, as in every profile.
	side := daprrun.Options{AppID: config.DefaultAppID, AppPort: appPort, HTTPPort: httpPort, GRPCPort: grpcPort,
		ResourcesDir: res, Dir: o.DataDir, Output: o.Log, APIToken: daprrun.NewToken(), AppAPIToken: daprrun.NewToken()}
	env := append(side.AppEnv(),
		"AUTOGLM_PORT="+strconv.Itoa(appPort),
		"AUTOGLM_NODE_ID=bench-0",
		"AUTOGLM_LOG_LEVEL=warn",
		"AUTOGLM_BROADCAST_TOPIC="+o.Topic,
		// Every benchmark connection comes from this one address.
		"AUTOGLM_MAX_CONNS_PER_ADDR=0",
	)
	if o.Pprof != "" {
		env = append(env, "AUTOGLM_PPROF="+o.Pprof)
	}
	env = append(env, o.Env...)
	app, err := daprrun.StartProcess(o.AppBin, env, o.Log)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", o.AppBin, err)
	}
	if o.DaprdPprof > 0 {
		side.Args = []string{"--enable-profiling", "--profile-port", strconv.Itoa(o.DaprdPprof)}
	}
	side.TraceEnv = append(os.Environ(), env...) // daprd traces where the app does
	sc, err := daprrun.Start(side)
	if err != nil {
		_ = app.Stop(5 * time.Second)
		return nil, err
	}
	s := &Service{URL: "http://127.0.0.1:" + strconv.Itoa(appPort), app: app, daprd: sc}
	wctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	if err := sc.WaitHealthy(wctx); err != nil {
		s.Stop()
		return nil, err
	}
	for {
		if r, err := http.Get(s.URL + "/readyz"); err == nil {
			r.Body.Close()
			if r.StatusCode == http.StatusOK {
				return s, nil
			}
		}
		select {
		case <-app.Done():
			s.Stop()
			return nil, fmt.Errorf("app exited before it was ready")
		case <-wctx.Done():
			s.Stop()
			return nil, fmt.Errorf("app not ready: %w", wctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func sqliteSync(path, mode string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	s := string(b)
	i := strings.Index(s, "autoglm.db")
	if !strings.Contains(s, "state.sqlite") || i < 0 {
		return fmt.Errorf("%s: not the SQLite state store of the local profile", path)
	}
	j := i + len("autoglm.db")
	s = s[:j] + "?_pragma=synchronous(" + mode + ")" + s[j:]
	return os.WriteFile(path, []byte(s), 0o644)
}

// Procs returns the process ids to sample.
func (s *Service) Procs() map[string]int {
	return map[string]int{"app": s.app.Pid(), "daprd": s.daprd.Pid()}
}

// Stop stops both processes.
func (s *Service) Stop() {
	_ = s.app.Stop(15 * time.Second)
	_ = s.daprd.Stop(10 * time.Second)
}
