// Package daprrun starts daprd sidecars (and app processes) on this machine
// without the Dapr CLI: it renders a component profile into a resources
// folder, picks free ports, starts bin/daprd and waits until it is healthy.
// The dev runner (make run, make run-cluster), the integration tests and the
// benchmark all use it.
package daprrun

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
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
	"time"
)

// RepoRoot finds the repository root (the folder holding go.mod and
// components/) from the working directory upwards.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "components")); err == nil {
			if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
				return dir, nil
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("daprrun: repository root (go.mod + components/) not found above the working directory")
		}
		dir = parent
	}
}

// DaprVersion is the Dapr release the service is built and tested against;
// a daprd of another minor release is not used.
const DaprVersion = "1.14"

// Binary is a daprd found on this machine.
type Binary struct {
	Path    string
	Version string // what `daprd --version` printed
	From    string // where it was found: DAPRD, the Dapr CLI's install, PATH, bin/daprd
}

func (b Binary) String() string { return fmt.Sprintf("daprd %s at %s (%s)", b.Version, b.Path, b.From) }

var found struct {
	sync.Mutex
	bin map[bool]Binary
}

// FindDaprd looks for a daprd 1.14.x, in this order: $DAPRD, the Dapr CLI's
// install (~/.dapr/bin/daprd, `dapr init --slim`), daprd on PATH, and —
// unless installedOnly — bin/daprd built from tools/daprd. Each candidate
// must answer `daprd --version` with 1.14.x. A $DAPRD that is missing or of
// another version is an error, not skipped. The error lists what was
// tried.
func FindDaprd(installedOnly bool) (Binary, error) {
	found.Lock()
	defer found.Unlock()
	if b, ok := found.bin[installedOnly]; ok {
		return b, nil
	}
	if p := os.Getenv("DAPRD"); p != "" {
		b, err := checkDaprd(p, "DAPRD")
		if err != nil {
			return Binary{}, fmt.Errorf("DAPRD=%s: %w", p, err)
		}
		return remember(installedOnly, b), nil
	}
	var tried []string
	try := func(path, from string) (Binary, bool) {
		b, err := checkDaprd(path, from)
		if err != nil {
			tried = append(tried, fmt.Sprintf("%s (%s): %v", path, from, err))
			return Binary{}, false
		}
		return b, true
	}
	if home, err := os.UserHomeDir(); err == nil {
		if b, ok := try(filepath.Join(home, ".dapr", "bin", "daprd"), "Dapr CLI install"); ok {
			return remember(installedOnly, b), nil
		}
	}
	if p, err := exec.LookPath("daprd"); err == nil {
		if b, ok := try(p, "PATH"); ok {
			return remember(installedOnly, b), nil
		}
	} else {
		tried = append(tried, "PATH: no daprd")
	}
	if !installedOnly {
		if root, err := RepoRoot(); err == nil {
			if b, ok := try(filepath.Join(root, "bin", "daprd"), "built from tools/daprd"); ok {
				return remember(installedOnly, b), nil
			}
		}
	}
	return Binary{}, fmt.Errorf("no daprd %s.x found (tried %s): install one with `dapr init --slim` "+
		"(Dapr CLI), set DAPRD=/path/to/daprd, or build bin/daprd with `make daprd`", DaprVersion, strings.Join(tried, "; "))
}

func remember(installedOnly bool, b Binary) Binary {
	if found.bin == nil {
		found.bin = map[bool]Binary{}
	}
	found.bin[installedOnly] = b
	return b
}

// checkDaprd runs `path --version` and accepts 1.14.x.
func checkDaprd(path, from string) (Binary, error) {
	if _, err := os.Stat(path); err != nil {
		return Binary{}, errors.New("not found")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, "--version").Output()
	if err != nil {
		return Binary{}, fmt.Errorf("`daprd --version` failed: %v", err)
	}
	v := strings.TrimSpace(string(out))
	if v != DaprVersion && !strings.HasPrefix(v, DaprVersion+".") {
		return Binary{}, fmt.Errorf("version %q, need %s.x", v, DaprVersion)
	}
	return Binary{Path: path, Version: v, From: from}, nil
}

// Daprd returns the path of the daprd that FindDaprd(false) finds.
func Daprd() (string, error) {
	b, err := FindDaprd(false)
	return b.Path, err
}

// NewToken returns a fresh API token: 32 random bytes, hex-encoded.
func NewToken() string {
	var b [32]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand)
	return hex.EncodeToString(b[:])
}

// handedOut holds the ports FreePort has returned in this process: the
// kernel may give a just-closed port out again, and two ports picked for
// one daprd (HTTP and metrics, say) must differ.
var handedOut = struct {
	sync.Mutex
	ports map[int]bool
}{ports: map[int]bool{}}

// FreePort returns a TCP port that was free a moment ago on loopback and
// that it has not returned before in this process.
func FreePort() (int, error) {
	handedOut.Lock()
	defer handedOut.Unlock()
	for range 100 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		if !handedOut.ports[port] {
			handedOut.ports[port] = true
			return port, nil
		}
	}
	return 0, errors.New("no fresh free port after 100 tries")
}

// PortRaceLost reports whether a process log ends with a failure to bind
// a port that another process took between picking and binding.
func PortRaceLost(log string) bool {
	tail := log[max(len(log)-8192, 0):]
	return strings.Contains(tail, "address already in use") || strings.Contains(tail, "could not listen on any endpoint")
}

// Render copies the YAML files of a component profile into dst, replacing
// {{NAME}} placeholders with vars. Unknown placeholders are an error, so a
// profile never starts half-configured.
func Render(src, dst string, vars map[string]string) error {
	entries, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	for _, e := range entries {
		if e.IsDir() || !(strings.HasSuffix(e.Name(), ".yaml") || strings.HasSuffix(e.Name(), ".yml")) {
			continue
		}
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			return err
		}
		s := string(b)
		for k, v := range vars {
			s = strings.ReplaceAll(s, "{{"+k+"}}", v)
		}
		if i := strings.Index(s, "{{"); i >= 0 {
			end := strings.Index(s[i:], "}}")
			if end < 0 {
				end = len(s) - i - 2
			}
			return fmt.Errorf("%s: placeholder %s has no value", e.Name(), s[i:i+end+2])
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), []byte(s), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// sidecarProcs is the scheduler setting daprd runs with unless the
// environment sets GOMAXPROCS, as in the deployments (dapr.io/env in
// manifests/, compose.yaml): a sidecar that needs less than a core spends
// much of its CPU waking, spinning and parking a second thread for each
// call (docs/benchmarks.md, "One P").
const sidecarProcs = "GOMAXPROCS=1"

// Options describe one sidecar.
type Options struct {
	Daprd        string // binary; empty: Daprd()
	AppID        string
	AppPort      int
	HTTPPort     int // 0: a free port
	GRPCPort     int // 0: a free port
	MetricsPort  int // 0: a free port
	InternalPort int // daprd-to-daprd gRPC port; 0: a free port
	ResourcesDir string
	// Dir is daprd's working directory, where relative file paths in the
	// components resolve (components/local keeps its SQLite files there);
	// empty: ResourcesDir.
	Dir        string
	Env        []string // extra environment for daprd
	ConfigFile string   // optional Dapr Configuration file
	// TraceEnv is the app's environment (nil: this process's). When it
	// sets an OTLP endpoint and ConfigFile is empty, daprd traces to the
	// same collector (TracingConfig).
	TraceEnv    []string
	LogLevel    string // default warn
	APIToken    string // DAPR_API_TOKEN the sidecar requires on its API
	AppAPIToken string // APP_API_TOKEN the sidecar presents on its calls to the app
	Output      io.Writer
	Args        []string // extra daprd flags (e.g. --enable-profiling)
}

// env is daprd's environment on top of base (this process's): sidecarProcs
// unless base or Env set GOMAXPROCS (a later entry wins), Env, the tokens.
func (o Options) env(base []string) []string {
	env := append(append([]string{sidecarProcs}, base...), o.Env...)
	if o.APIToken != "" {
		env = append(env, "DAPR_API_TOKEN="+o.APIToken)
	}
	if o.AppAPIToken != "" {
		env = append(env, "APP_API_TOKEN="+o.AppAPIToken)
	}
	return env
}

// Sidecar is a running daprd.
type Sidecar struct {
	Options
	cmd  *exec.Cmd
	exit *exit
	tail *tail
}

// exit records a process's end: done is closed once it has exited.
type exit struct {
	done chan struct{}
	err  error
}

func watch(cmd *exec.Cmd) *exit {
	e := &exit{done: make(chan struct{})}
	go func() { e.err = cmd.Wait(); close(e.done) }()
	return e
}

// AppEnv is what the app beside this sidecar needs to talk to it:
// DAPR_HTTP_PORT, DAPR_GRPC_PORT and the two tokens.
func (o Options) AppEnv() []string {
	return []string{"DAPR_HTTP_PORT=" + strconv.Itoa(o.HTTPPort), "DAPR_GRPC_PORT=" + strconv.Itoa(o.GRPCPort),
		"DAPR_API_TOKEN=" + o.APIToken, "APP_API_TOKEN=" + o.AppAPIToken}
}

// Start launches daprd. Call WaitHealthy before using it.
func Start(opt Options) (*Sidecar, error) {
	var err error
	if opt.Daprd == "" {
		if opt.Daprd, err = Daprd(); err != nil {
			return nil, err
		}
	}
	for _, p := range []*int{&opt.HTTPPort, &opt.GRPCPort, &opt.MetricsPort} {
		if *p == 0 {
			if *p, err = FreePort(); err != nil {
				return nil, err
			}
		}
	}
	if opt.LogLevel == "" {
		opt.LogLevel = "warn"
	}
	if opt.InternalPort == 0 {
		if opt.InternalPort, err = FreePort(); err != nil {
			return nil, err
		}
	}
	args := []string{
		"--app-id", opt.AppID,
		"--app-port", strconv.Itoa(opt.AppPort),
		"--app-protocol", "http",
		"--dapr-http-port", strconv.Itoa(opt.HTTPPort),
		"--dapr-grpc-port", strconv.Itoa(opt.GRPCPort),
		"--dapr-internal-grpc-port", strconv.Itoa(opt.InternalPort),
		"--metrics-port", strconv.Itoa(opt.MetricsPort),
		"--resources-path", opt.ResourcesDir,
		"--log-level", opt.LogLevel,
		"--dapr-listen-addresses", "127.0.0.1",
		"--placement-host-address", "",
	}
	if opt.ConfigFile == "" {
		if opt.ConfigFile, err = TracingConfig(opt.TraceEnv, opt.ResourcesDir+".tracing"); err != nil {
			return nil, err
		}
	}
	if opt.ConfigFile != "" {
		args = append(args, "--config", opt.ConfigFile)
	}
	args = append(args, opt.Args...)
	cmd := exec.Command(opt.Daprd, args...)
	cmd.Dir = opt.Dir
	if cmd.Dir == "" {
		cmd.Dir = opt.ResourcesDir
	}
	cmd.Env = opt.env(os.Environ())
	t := &tail{}
	var w io.Writer = t
	if opt.Output != nil {
		w = io.MultiWriter(opt.Output, t)
	}
	cmd.Stdout, cmd.Stderr = w, w
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start daprd: %w", err)
	}
	return &Sidecar{Options: opt, cmd: cmd, exit: watch(cmd), tail: t}, nil
}

// LastError is the last line daprd logged at level error or fatal ("" if
// none).
func (s *Sidecar) LastError() string { return s.tail.lastError() }

// HTTPURL is daprd's HTTP API base.
func (s *Sidecar) HTTPURL() string { return "http://127.0.0.1:" + strconv.Itoa(s.HTTPPort) }

// Pid is the daprd process id.
func (s *Sidecar) Pid() int { return s.cmd.Process.Pid }

// WaitHealthy polls daprd's health endpoint until it answers 2xx, the
// process exits, or ctx ends.
func (s *Sidecar) WaitHealthy(ctx context.Context) error {
	c := &http.Client{Timeout: time.Second}
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.HTTPURL()+"/v1.0/healthz", nil)
		if s.APIToken != "" {
			req.Header.Set("dapr-api-token", s.APIToken)
		}
		if resp, err := c.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode/100 == 2 {
				return nil
			}
		}
		select {
		case <-s.exit.done:
			return fmt.Errorf("daprd exited before it was healthy: %v", s.exit.err)
		case <-ctx.Done():
			return fmt.Errorf("daprd not healthy: %w", ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Stop asks daprd to shut down and kills it if it has not exited after
// grace.
func (s *Sidecar) Stop(grace time.Duration) error {
	return stop(s.cmd, s.exit, grace)
}

// Kill ends daprd at once (SIGKILL), as a crash would.
func (s *Sidecar) Kill() { kill(s.cmd, s.exit) }

func stop(cmd *exec.Cmd, e *exit, grace time.Duration) error {
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-e.done:
		return nil
	case <-time.After(grace):
		kill(cmd, e)
		return errors.New("did not stop in time; killed")
	}
}

func kill(cmd *exec.Cmd, e *exit) {
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	<-e.done
}

// Process is an app process started next to a sidecar.
type Process struct {
	cmd  *exec.Cmd
	exit *exit
	tail *tail
}

// StartProcess runs a binary with extra environment variables. Its output
// goes to out and its last lines are kept for ExitReason.
func StartProcess(bin string, env []string, out io.Writer) (*Process, error) {
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), env...)
	t := &tail{}
	var w io.Writer = t
	if out != nil {
		w = io.MultiWriter(out, t)
	}
	cmd.Stdout, cmd.Stderr = w, w
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return &Process{cmd: cmd, exit: watch(cmd), tail: t}, nil
}

// ExitReason says why the process ended: its exit status and the last
// line it logged at level error or fatal (else its last line). Call it
// after Done is closed.
func (p *Process) ExitReason() string {
	r := p.exit.err
	why := "exited"
	if r != nil {
		why = r.Error()
	}
	if line := p.tail.reason(); line != "" {
		why += ": " + line
	}
	return why
}

// tail keeps the last few KiB written to it.
type tail struct {
	mu  sync.Mutex
	buf []byte
}

const tailSize = 8 << 10

func (t *tail) Write(b []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, b...)
	if len(t.buf) > tailSize {
		t.buf = append(t.buf[:0:0], t.buf[len(t.buf)-tailSize:]...)
	}
	return len(b), nil
}

// reason is the last error or fatal line, else the last line.
func (t *tail) reason() string {
	if l := t.lastError(); l != "" {
		return l
	}
	return strings.TrimSpace(t.lines()[len(t.lines())-1])
}

func (t *tail) lines() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.Split(strings.TrimSpace(string(t.buf)), "\n")
}

// lastError is the last line logged at level error or fatal, its message
// when the line is logfmt.
func (t *tail) lastError() string {
	lines := t.lines()
	for i := len(lines) - 1; i >= 0; i-- {
		l := lines[i]
		if strings.Contains(l, "level=error") || strings.Contains(l, "level=fatal") ||
			strings.Contains(l, `"level":"error"`) || strings.Contains(l, `"level":"fatal"`) {
			if m := msgRE.FindStringSubmatch(l); m != nil {
				return m[1]
			}
			return strings.TrimSpace(l)
		}
	}
	return ""
}

var msgRE = regexp.MustCompile(`msg="((?:[^"\\]|\\.)*)"`)

// Pid is the process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Done is closed once the process has ended.
func (p *Process) Done() <-chan struct{} { return p.exit.done }

// Stop sends SIGTERM and kills after grace.
func (p *Process) Stop(grace time.Duration) error { return stop(p.cmd, p.exit, grace) }

// Kill ends the process at once.
func (p *Process) Kill() { kill(p.cmd, p.exit) }
