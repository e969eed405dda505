package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/open-autoglm/autoglm/app/internal/cluster"
	"github.com/open-autoglm/autoglm/app/internal/daprrun"
	"github.com/open-autoglm/autoglm/app/internal/daprtest"
)

func TestMain(m *testing.M) { os.Exit(cluster.Main(m)) }

// build builds the runner and the service from the tree under test, once
// per test process.
func build(t *testing.T) (runner, app string) {
	t.Helper()
	return cluster.Command(t, "autoglm-dev"), cluster.App(t)
}

// clone lays out what a developer's clone gives the runner — components/,
// config/, go.mod and bin/ (the service and the daprd found on this
// machine) — in a folder of its own, as a second developer's checkout
// would be.
func clone(t *testing.T, app string) string {
	t.Helper()
	root, err := daprrun.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	daprd, err := daprrun.FindDaprd(false)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, name := range []string{"components", "config", "go.mod"} {
		if err := os.Symlink(filepath.Join(root, name), filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, target := range map[string]string{"autoglm": app, "daprd": daprd.Path} {
		if err := os.Symlink(target, filepath.Join(dir, "bin", name)); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// runProc is one runner process and the lines it printed.
type runProc struct {
	t     *testing.T
	cmd   *exec.Cmd
	mu    sync.Mutex
	out   strings.Builder
	lines chan string
	done  chan struct{}
	err   error
}

func startRunner(t *testing.T, runner, dir string, args ...string) *runProc {
	t.Helper()
	cmd := exec.Command(runner, args...)
	cmd.Dir = dir
	cmd.Env = os.Environ()
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := &runProc{t: t, cmd: cmd, lines: make(chan string, 1024), done: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			r.mu.Lock()
			r.out.WriteString(sc.Text() + "\n")
			r.mu.Unlock()
			select {
			case r.lines <- sc.Text():
			default:
			}
		}
	}()
	go func() { r.err = cmd.Wait(); pw.Close(); close(r.done) }()
	t.Cleanup(func() {
		r.stop()
		if t.Failed() {
			t.Logf("---- runner in %s ----\n%s", dir, r.output())
		}
	})
	return r
}

func (r *runProc) output() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.out.String()
}

// stop interrupts the runner as Ctrl-C would and waits for it to exit.
func (r *runProc) stop() {
	select {
	case <-r.done:
		return
	default:
	}
	_ = r.cmd.Process.Signal(os.Interrupt)
	select {
	case <-r.done:
	case <-time.After(40 * time.Second):
		_ = syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL)
		<-r.done
	}
}

var readyRE = regexp.MustCompile(`replica 0 ready: app http://127\.0\.0\.1:(\d+) .*daprd http://127\.0\.0\.1:(\d+) .*API tokens (\S+)\)`)

// ready waits for the ready line and returns the app port, daprd's HTTP
// port and daprd's API token.
func (r *runProc) ready() (appPort, daprPort int, token string) {
	r.t.Helper()
	deadline := time.After(90 * time.Second)
	for {
		select {
		case l := <-r.lines:
			if m := readyRE.FindStringSubmatch(l); m != nil {
				appPort, _ = strconv.Atoi(m[1])
				daprPort, _ = strconv.Atoi(m[2])
				b, err := os.ReadFile(m[3])
				if err != nil {
					r.t.Fatal(err)
				}
				for _, kv := range strings.Split(string(b), "\n") {
					if v, ok := strings.CutPrefix(kv, "DAPR_API_TOKEN="); ok {
						token = v
					}
				}
				return
			}
		case <-r.done:
			r.t.Fatalf("runner exited before it was ready: %v", r.err)
		case <-deadline:
			r.t.Fatal("runner not ready after 90s")
		}
	}
}

func call(t *testing.T, method, url, token, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("dapr-api-token", token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func node(t *testing.T, url, token string) string {
	t.Helper()
	code, body := call(t, http.MethodGet, url, token, "")
	var v struct{ Node string }
	if err := json.Unmarshal([]byte(body), &v); code != http.StatusOK || err != nil || v.Node == "" {
		t.Fatalf("GET %s = %d %s", url, code, body)
	}
	return v.Node
}

// Two developers run `make run` (the runner with its default flags) from
// their own clones on one machine: both serve, on different ports, and
// service invocation through each sidecar reaches that developer's own
// app, never the other one.
func TestTwoRunsSideBySide(t *testing.T) {
	daprtest.Integration(t)
	runner, app := build(t)
	a := startRunner(t, runner, clone(t, app))
	aApp, aDapr, aToken := a.ready()
	b := startRunner(t, runner, clone(t, app))
	bApp, bDapr, bToken := b.ready()

	if aApp == bApp || aDapr == bDapr {
		t.Fatalf("both runs use app port %d/%d, daprd port %d/%d", aApp, bApp, aDapr, bDapr)
	}
	if !strings.Contains(b.output(), "is in use; using") {
		t.Errorf("the second run did not say it moved off the taken default ports:\n%s", b.output())
	}
	invoke := func(daprPort int, path string) string {
		return fmt.Sprintf("http://127.0.0.1:%d/v1.0/invoke/autoglm/method/%s", daprPort, path)
	}
	aNode := node(t, fmt.Sprintf("http://127.0.0.1:%d/version", aApp), "")
	bNode := node(t, fmt.Sprintf("http://127.0.0.1:%d/version", bApp), "")
	if aNode == bNode {
		t.Fatalf("both apps report node %q", aNode)
	}
	// Each sidecar resolves the app id "autoglm" to its own app, every time
	// (mDNS would spread these calls over both runs).
	for range 6 {
		if got := node(t, invoke(aDapr, "version"), aToken); got != aNode {
			t.Fatalf("invocation through the first sidecar reached node %q, want %q", got, aNode)
		}
		if got := node(t, invoke(bDapr, "version"), bToken); got != bNode {
			t.Fatalf("invocation through the second sidecar reached node %q, want %q", got, bNode)
		}
	}
	// A document written through one run's sidecar is in that run's store
	// only.
	if code, body := call(t, http.MethodPut, invoke(aDapr, "v1/docs/profiles/side-by-side"), aToken, `{"name":"Ann"}`); code/100 != 2 {
		t.Fatalf("PUT through the first sidecar = %d %s", code, body)
	}
	if code, body := call(t, http.MethodGet, invoke(aDapr, "v1/docs/profiles/side-by-side"), aToken, ""); code != http.StatusOK || !strings.Contains(body, "Ann") {
		t.Fatalf("GET through the first sidecar = %d %s", code, body)
	}
	if code, body := call(t, http.MethodGet, invoke(bDapr, "v1/docs/profiles/side-by-side"), bToken, ""); code != http.StatusNotFound {
		t.Fatalf("GET through the second sidecar = %d %s, want 404 (its own, empty store)", code, body)
	}
	a.stop()
	b.stop()
	for _, r := range []*runProc{a, b} {
		if r.err != nil || !strings.Contains(r.output(), "stopped") {
			t.Errorf("runner did not stop cleanly on Ctrl-C: %v", r.err)
		}
	}
}

// foreign serves /version as some other process on a free loopback port.
func foreign(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"version":"other","node":"someone-else"}`)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().(*net.TCPAddr).Port
}

// Another server answers the app port the runner is told to use: the
// runner never says ready, and says which port is the problem.
func TestRunnerNotReadyWhenAnotherServerHasTheAppPort(t *testing.T) {
	daprtest.Integration(t)
	runner, app := build(t)
	port := foreign(t)
	r := startRunner(t, runner, clone(t, app), "-port", strconv.Itoa(port))
	select {
	case <-r.done:
	case <-time.After(90 * time.Second):
		t.Fatal("runner still running after 90s")
	}
	out := r.output()
	if r.err == nil || strings.Contains(out, " ready:") || !strings.Contains(out, strconv.Itoa(port)) {
		t.Fatalf("runner exit %v, output:\n%s\nwant a failure naming port %d and no ready line", r.err, out, port)
	}
}

// The pair is not ready while the app port answers as another process,
// even when the app itself runs (here on another port): the check is the
// node id of this run, not that something answers.
func TestStartPairChecksTheAnsweringProcess(t *testing.T) {
	daprtest.Integration(t)
	_, app := build(t)
	port := foreign(t)
	own, err := daprrun.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	res := filepath.Join(dir, "resources")
	root, _ := daprrun.RepoRoot()
	if err := daprrun.Render(filepath.Join(root, "components", "local"), res, nil); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
	defer cancel()
	p, err := daprrun.StartPair(ctx, daprrun.PairOptions{
		Name: "replica 0", Bin: app, LogFile: filepath.Join(dir, "daprd.log"), NodeID: "mine",
		Env:     []string{"AUTOGLM_PORT=" + strconv.Itoa(own), "AUTOGLM_NODE_ID=mine"},
		Sidecar: daprrun.Options{AppID: "autoglm-" + daprrun.NewToken()[:6], AppPort: port, ResourcesDir: res, Dir: dir},
	})
	if err == nil {
		p.Stop()
		t.Fatal("StartPair succeeded although the app port answers as another process")
	}
	if !strings.Contains(err.Error(), `"someone-else"`) {
		t.Fatalf("StartPair error = %v, want one naming the other process's node", err)
	}
}

// The runner reports why the app stopped, not only that it did.
func TestRunnerReportsTheAppsExitReason(t *testing.T) {
	daprtest.Integration(t)
	runner, app := build(t)
	r := startRunner(t, runner, clone(t, app), "-collections", "/nonexistent/collections.yaml")
	select {
	case <-r.done:
	case <-time.After(90 * time.Second):
		t.Fatal("runner still running after 90s")
	}
	out := r.output()
	if r.err == nil || strings.Contains(out, " ready:") || !regexp.MustCompile(`autoglm-dev: .*the app exited: exit status 1: .*/nonexistent/collections.yaml`).MatchString(out) {
		t.Fatalf("runner exit %v, output:\n%s\nwant the app's own error in the runner's last line", r.err, out)
	}
}
