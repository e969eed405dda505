// Package cluster starts a cluster of replicas as separate processes for
// integration tests: for each replica the service binary (built once per
// test process from the tree under test) and its own daprd, on a rendered
// component profile, all sharing one broadcast topic. Each app and its
// daprd require each other's API token, generated per replica. Tests kill, stop and
// restart the processes to inject faults; on failure every replica's output
// is written to the test log. A missing daprd or backing service fails the
// test.
package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/open-autoglm/autoglm/app/config"
	"github.com/open-autoglm/autoglm/app/internal/cluster/backend"
	"github.com/open-autoglm/autoglm/app/internal/daprrun"
	"github.com/open-autoglm/autoglm/app/internal/daprtest"
	"github.com/open-autoglm/autoglm/app/protocol"
)

// Options describe a cluster.
type Options struct {
	Profile  string // redis (default) or postgres
	Replicas int    // default 3
	// Topic is the broadcast topic; default a fresh one, so clusters of
	// different tests never see each other's changes.
	Topic string
	// Env is extra environment for every replica's app (AUTOGLM_...).
	Env []string
	// RedisAddr is the Redis the sidecars' components use; default
	// backend.RedisAddr(). A Proxy's address lets a test freeze it.
	RedisAddr string
}

// Cluster is a set of running replicas.
type Cluster struct {
	t     testing.TB
	opt   Options
	Topic string
	Nodes []*Node
}

// Node is one replica: the app process and its daprd.
type Node struct {
	c       *Cluster
	Index   int
	NodeID  string
	AppPort int
	// The sidecar keeps its ports across restarts (the app is configured
	// with them).
	HTTPPort, GRPCPort int
	// DaprToken (DAPR_API_TOKEN) and AppToken (APP_API_TOKEN): what daprd
	// requires on its API and what the app requires on daprd's calls.
	DaprToken, AppToken string
	resDir              string
	log                 *logBuffer

	mu      sync.Mutex
	app     *daprrun.Process
	sidecar *daprrun.Sidecar
}

// builds are the commands built for this test process, by name under
// app/cmd, all in one temporary folder.
var builds struct {
	mu   sync.Mutex
	dir  string
	bins map[string]*built
}

type built struct {
	once sync.Once
	bin  string
	err  error
}

// Main runs a test binary's tests and then removes the binaries built for
// them: call it from TestMain.
func Main(m *testing.M) int {
	code := m.Run()
	builds.mu.Lock()
	defer builds.mu.Unlock()
	if builds.dir != "" {
		os.RemoveAll(builds.dir)
	}
	return code
}

// App builds the service binary from the tree under test, once per test
// process.
func App(t testing.TB) string {
	t.Helper()
	return Command(t, "autoglm")
}

// Command builds app/cmd/<name> from the tree under test, once per test
// process, and returns the binary's path.
func Command(t testing.TB, name string) string {
	t.Helper()
	builds.mu.Lock()
	b := builds.bins[name]
	if b == nil {
		b = &built{}
		if builds.bins == nil {
			builds.bins = map[string]*built{}
		}
		builds.bins[name] = b
	}
	builds.mu.Unlock()
	b.once.Do(func() {
		root, err := daprrun.RepoRoot()
		if err != nil {
			b.err = err
			return
		}
		builds.mu.Lock()
		if builds.dir == "" {
			builds.dir, err = os.MkdirTemp("", "autoglm-cluster-")
		}
		dir := builds.dir
		builds.mu.Unlock()
		if err != nil {
			b.err = err
			return
		}
		b.bin = filepath.Join(dir, name)
		cmd := exec.Command("go", "build", "-o", b.bin, "./app/cmd/"+name)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			b.err = fmt.Errorf("build %s: %v\n%s", name, err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.bin
}

// Start starts the replicas one after the other, waits until each is
// ready, and stops them all when the test ends.
func Start(t testing.TB, opt Options) *Cluster {
	t.Helper()
	daprtest.Integration(t)
	if opt.Profile == "" {
		opt.Profile = "redis"
	}
	if opt.Replicas <= 0 {
		opt.Replicas = 3
	}
	if opt.Topic == "" {
		opt.Topic = "changes-" + uuid.NewString()[:8]
	}
	daprtest.Backends(t, opt.Profile)
	if err := backend.Prepare(opt.Profile, opt.Topic); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = backend.Discard(opt.Profile, opt.Topic) })
	bin := App(t)
	if _, err := daprrun.Daprd(); err != nil {
		t.Fatal(err)
	}
	root, err := daprrun.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	c := &Cluster{t: t, opt: opt, Topic: opt.Topic}
	t.Cleanup(func() {
		if t.Failed() {
			c.DumpLogs()
		}
		c.Stop()
	})
	for i := range opt.Replicas {
		n := &Node{c: c, Index: i, NodeID: fmt.Sprintf("%s-r%d", opt.Topic, i), resDir: t.TempDir(), log: &logBuffer{},
			DaprToken: daprrun.NewToken(), AppToken: daprrun.NewToken()}
		vars := backend.Vars(opt.Profile, t.TempDir(), opt.Topic)
		if opt.RedisAddr != "" {
			vars["REDIS_HOST"] = opt.RedisAddr
		}
		if err := daprrun.Render(filepath.Join(root, "components", opt.Profile), n.resDir, vars); err != nil {
			t.Fatalf("render components: %v", err)
		}
		c.Nodes = append(c.Nodes, n)
		for attempt := 1; ; attempt++ {
			for _, p := range []*int{&n.AppPort, &n.HTTPPort, &n.GRPCPort} {
				if *p, err = daprrun.FreePort(); err != nil {
					t.Fatal(err)
				}
			}
			err := n.startApp(bin)
			if err == nil {
				if err = n.StartSidecar(); err == nil {
					break
				}
			}
			// Another process took a port between our picking and its
			// binding: try again with new ones.
			if attempt < 3 && daprrun.PortRaceLost(n.log.tail(8192)) {
				n.KillApp()
				n.StopSidecar()
				continue
			}
			t.Fatal(err)
		}
	}
	for _, n := range c.Nodes {
		if err := n.WaitReady(60 * time.Second); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// Stop stops every replica (graceful, bounded).
func (c *Cluster) Stop() {
	var wg sync.WaitGroup
	for _, n := range c.Nodes {
		wg.Add(1)
		go func() { defer wg.Done(); n.StopApp(); n.StopSidecar() }()
	}
	wg.Wait()
}

// WSURLs are the sync endpoints of every replica, starting with node i's.
func (c *Cluster) WSURLs(i int) []string {
	var out []string
	for k := range c.Nodes {
		out = append(out, c.Nodes[(i+k)%len(c.Nodes)].WSURL())
	}
	return out
}

// DumpLogs writes the tail of every replica's output to the test log.
func (c *Cluster) DumpLogs() {
	for _, n := range c.Nodes {
		c.t.Logf("---- replica %d (%s, app :%d) ----\n%s", n.Index, n.NodeID, n.AppPort, n.log.tail(48<<10))
	}
}

// URL is the app's base URL.
func (n *Node) URL() string { return "http://127.0.0.1:" + strconv.Itoa(n.AppPort) }

// WSURL is the sync endpoint.
func (n *Node) WSURL() string { return protocol.SyncURL(n.URL()) }

func (n *Node) env() []string {
	env := append(n.sidecarOptions().AppEnv(),
		"AUTOGLM_PORT="+strconv.Itoa(n.AppPort),
		"AUTOGLM_NODE_ID="+n.NodeID,
		"AUTOGLM_BROADCAST_TOPIC="+n.c.Topic,
		"AUTOGLM_HEARTBEAT=1s",
		"AUTOGLM_PROBE_INTERVAL=200ms",
		"AUTOGLM_SHUTDOWN_GRACE=5s",
		"AUTOGLM_LOG_LEVEL=info",
	)
	return append(env, n.c.opt.Env...)
}

// sidecarOptions are the node's daprd settings; the app is configured with
// the same ports and tokens.
func (n *Node) sidecarOptions() daprrun.Options {
	return daprrun.Options{
		AppID: config.DefaultAppID, AppPort: n.AppPort, HTTPPort: n.HTTPPort, GRPCPort: n.GRPCPort,
		ResourcesDir: n.resDir, Output: n.log, LogLevel: "info", APIToken: n.DaprToken, AppAPIToken: n.AppToken,
		TraceEnv: append(os.Environ(), n.c.opt.Env...), // daprd traces where the app does
	}
}

func (n *Node) startApp(bin string) error {
	p, err := daprrun.StartProcess(bin, n.env(), n.log)
	if err != nil {
		return fmt.Errorf("replica %d: start app: %w", n.Index, err)
	}
	n.mu.Lock()
	n.app = p
	n.mu.Unlock()
	// The app must listen before its sidecar starts (daprd waits for it).
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := http.Get(n.URL() + "/healthz"); err == nil {
			return nil
		}
		select {
		case <-p.Done():
			return fmt.Errorf("replica %d: app exited at start", n.Index)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("replica %d: app not listening", n.Index)
		}
	}
}

// StartApp starts the app again (after KillApp or StopApp) and waits until
// it is ready.
func (n *Node) StartApp() error {
	if err := n.startApp(App(n.c.t)); err != nil {
		return err
	}
	return n.WaitReady(30 * time.Second)
}

// KillApp ends the app process at once (SIGKILL), as a crash would.
func (n *Node) KillApp() { end(n, &n.app, true) }

// StopApp stops the app gracefully (it drains its sessions).
func (n *Node) StopApp() { end(n, &n.app, false) }

// process is what a node runs: its app and its daprd.
type process interface {
	*daprrun.Process | *daprrun.Sidecar
	Kill()
	Stop(grace time.Duration) error
}

// end takes the process in slot out of the node, so that nothing else ends
// it, and ends it: at once (SIGKILL) when kill, else gracefully.
func end[P process](n *Node, slot *P, kill bool) {
	n.mu.Lock()
	p := *slot
	*slot = nil
	n.mu.Unlock()
	switch {
	case p == nil:
	case kill:
		p.Kill()
	default:
		_ = p.Stop(10 * time.Second)
	}
}

// StartSidecar starts daprd on the node's ports and waits until it is
// healthy.
func (n *Node) StartSidecar() error {
	sc, err := daprrun.Start(n.sidecarOptions())
	if err != nil {
		return fmt.Errorf("replica %d: start daprd: %w", n.Index, err)
	}
	n.mu.Lock()
	n.sidecar = sc
	n.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := sc.WaitHealthy(ctx); err != nil {
		return fmt.Errorf("replica %d: %w", n.Index, err)
	}
	return nil
}

// SidecarPid is daprd's process id (0 when it is not running).
func (n *Node) SidecarPid() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.sidecar == nil {
		return 0
	}
	return n.sidecar.Pid()
}

// KillSidecar ends daprd at once (SIGKILL), as a crash would.
func (n *Node) KillSidecar() { end(n, &n.sidecar, true) }

// StopSidecar stops daprd gracefully.
func (n *Node) StopSidecar() { end(n, &n.sidecar, false) }

// Ready returns the status of the app's /readyz (0 when it does not
// answer).
func (n *Node) Ready() int {
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(n.URL() + "/readyz")
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// WaitReady waits until /readyz answers 200.
func (n *Node) WaitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for n.Ready() != http.StatusOK {
		if time.Now().After(deadline) {
			return fmt.Errorf("replica %d not ready after %v", n.Index, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}

// Metric scrapes the app's /metrics and returns the sum of every sample of
// the named metric (a histogram's _count or _sum may be named).
func (n *Node) Metric(name string) (float64, error) {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(n.URL() + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	sum, found := 0.0, false
	for _, line := range strings.Split(string(body), "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		metric, _, _ := strings.Cut(f[0], "{")
		if metric != name {
			continue
		}
		v, err := strconv.ParseFloat(f[1], 64)
		if err == nil {
			sum += v
			found = true
		}
	}
	if !found {
		return 0, errors.New("metric " + name + " not exposed")
	}
	return sum, nil
}

// logBuffer collects a replica's output, keeping the newest 8 MiB.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.buf.Len() > 8<<20 {
		keep := b.buf.Bytes()[b.buf.Len()-4<<20:]
		b.buf = *bytes.NewBuffer(append([]byte("[earlier output dropped]\n"), keep...))
	}
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *logBuffer) tail(n int) string {
	s := b.String()
	if len(s) > n {
		s = "[...]\n" + s[len(s)-n:]
	}
	return strings.TrimSpace(s)
}
