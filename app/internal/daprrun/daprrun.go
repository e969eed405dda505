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
	"strconv"
	"strings"
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

// Daprd returns the daprd binary: $DAPRD, or bin/daprd in the repository.
func Daprd() (string, error) {
	if p := os.Getenv("DAPRD"); p != "" {
		return p, nil
	}
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	p := filepath.Join(root, "bin", "daprd")
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("daprd not found at %s: build it with `make daprd`", p)
	}
	return p, nil
}

// NewToken returns a fresh API token: 32 random bytes, hex-encoded.
func NewToken() string {
	var b [32]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand)
	return hex.EncodeToString(b[:])
}

// FreePort returns a TCP port that was free a moment ago on loopback.
func FreePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
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

// Options describe one sidecar.
type Options struct {
	Daprd        string // binary; empty: Daprd()
	AppID        string
	AppPort      int
	HTTPPort     int // 0: a free port
	GRPCPort     int // 0: a free port
	MetricsPort  int // 0: a free port
	ResourcesDir string
	ConfigFile   string // optional Dapr Configuration file
	LogLevel     string // default warn
	APIToken     string // DAPR_API_TOKEN the sidecar requires on its API
	AppAPIToken  string // APP_API_TOKEN the sidecar presents on its calls to the app
	Output       io.Writer
	Args         []string // extra daprd flags (e.g. --enable-profiling)
}

// Sidecar is a running daprd.
type Sidecar struct {
	Options
	cmd  *exec.Cmd
	exit *exit
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
	internal, err := FreePort()
	if err != nil {
		return nil, err
	}
	args := []string{
		"--app-id", opt.AppID,
		"--app-port", strconv.Itoa(opt.AppPort),
		"--app-protocol", "http",
		"--dapr-http-port", strconv.Itoa(opt.HTTPPort),
		"--dapr-grpc-port", strconv.Itoa(opt.GRPCPort),
		"--dapr-internal-grpc-port", strconv.Itoa(internal),
		"--metrics-port", strconv.Itoa(opt.MetricsPort),
		"--resources-path", opt.ResourcesDir,
		"--log-level", opt.LogLevel,
		"--dapr-listen-addresses", "127.0.0.1",
		"--placement-host-address", "",
	}
	if opt.ConfigFile != "" {
		args = append(args, "--config", opt.ConfigFile)
	}
	args = append(args, opt.Args...)
	cmd := exec.Command(opt.Daprd, args...)
	cmd.Env = os.Environ()
	if opt.APIToken != "" {
		cmd.Env = append(cmd.Env, "DAPR_API_TOKEN="+opt.APIToken)
	}
	if opt.AppAPIToken != "" {
		cmd.Env = append(cmd.Env, "APP_API_TOKEN="+opt.AppAPIToken)
	}
	if opt.Output != nil {
		cmd.Stdout, cmd.Stderr = opt.Output, opt.Output
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start daprd: %w", err)
	}
	return &Sidecar{Options: opt, cmd: cmd, exit: watch(cmd)}, nil
}

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
}

// StartProcess runs a binary with extra environment variables.
func StartProcess(bin string, env []string, out io.Writer) (*Process, error) {
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), env...)
	if out != nil {
		cmd.Stdout, cmd.Stderr = out, out
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return &Process{cmd: cmd, exit: watch(cmd)}, nil
}

// Pid is the process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Done is closed once the process has ended.
func (p *Process) Done() <-chan struct{} { return p.exit.done }

// Stop sends SIGTERM and kills after grace.
func (p *Process) Stop(grace time.Duration) error { return stop(p.cmd, p.exit, grace) }

// Kill ends the process at once.
func (p *Process) Kill() { kill(p.cmd, p.exit) }
