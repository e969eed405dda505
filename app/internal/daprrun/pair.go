package daprrun

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Pair is an app process with its daprd, as the dev runners start them.
type Pair struct {
	Name    string
	App     *Process
	Sidecar *Sidecar
}

// PairOptions describe a pair. The app gets DAPR_HTTP_PORT, DAPR_GRPC_PORT
// and the two API tokens of its sidecar on top of Env; tokens left empty
// in Sidecar are generated for the run, so the routes daprd calls are
// never open.
type PairOptions struct {
	Name    string
	Bin     string
	Env     []string
	Out     io.Writer // the app's output
	LogFile string    // daprd's output
	Sidecar Options
	// NodeID, when set, is the node id this run gave the app
	// (AUTOGLM_NODE_ID): the pair is ready only once GET /version on the
	// app port, and the same call through daprd's service invocation,
	// answer with it — so another process on the app port, or another
	// instance reached by name resolution, is never taken for this one.
	NodeID string
}

// StartPair starts the app, then its daprd, and waits until daprd is
// healthy. On failure nothing it started is left running.
func StartPair(ctx context.Context, o PairOptions) (*Pair, error) {
	logf, err := os.Create(o.LogFile)
	if err != nil {
		return nil, err
	}
	sc := o.Sidecar
	for _, t := range []*string{&sc.APIToken, &sc.AppAPIToken} {
		if *t == "" {
			*t = NewToken()
		}
	}
	for _, p := range []*int{&sc.HTTPPort, &sc.GRPCPort} {
		if *p == 0 {
			if *p, err = FreePort(); err != nil {
				return nil, err
			}
		}
	}
	app, err := StartProcess(o.Bin, slices.Concat(o.Env, sc.AppEnv()), o.Out)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", o.Bin, err)
	}
	sc.Output = logf
	if sc.TraceEnv == nil {
		sc.TraceEnv = slices.Concat(os.Environ(), o.Env) // daprd traces where the app does
	}
	side, err := Start(sc)
	if err != nil {
		_ = app.Stop(5 * time.Second)
		return nil, err
	}
	p := &Pair{Name: o.Name, App: app, Sidecar: side}
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	// An app that dies while daprd starts is the cause to report.
	wctx, cancelApp := context.WithCancelCause(wctx)
	go func() {
		select {
		case <-app.Done():
			cancelApp(fmt.Errorf("the app exited: %s", app.ExitReason()))
		case <-wctx.Done():
		}
	}()
	err = side.WaitHealthy(wctx)
	if err == nil && o.NodeID != "" {
		err = p.waitOwn(wctx, o.NodeID)
	}
	if err != nil {
		if cause := context.Cause(wctx); cause != nil && !errors.Is(cause, context.DeadlineExceeded) && !errors.Is(cause, context.Canceled) {
			err = cause
		}
		p.Stop()
		if e := side.LastError(); e != "" {
			return nil, fmt.Errorf("%s: %w; daprd's last error: %s (log: %s)", o.Name, err, e, o.LogFile)
		}
		return nil, fmt.Errorf("%s: %w (daprd log: %s)", o.Name, err, o.LogFile)
	}
	return p, nil
}

// waitOwn polls GET /version directly and through daprd until both answer
// with node; the last wrong answer is in the error.
func (p *Pair) waitOwn(ctx context.Context, node string) error {
	c := &http.Client{Timeout: 2 * time.Second}
	sc := p.Sidecar
	direct := fmt.Sprintf("http://127.0.0.1:%d/version", sc.AppPort)
	invoked := fmt.Sprintf("%s/v1.0/invoke/%s/method/version", sc.HTTPURL(), sc.AppID)
	var last error
	for i, u := range []string{direct, invoked} {
		ctx := ctx
		if i == 1 {
			// daprd is healthy and the app is ours: invocation works within
			// moments unless name resolution is broken.
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, 15*time.Second)
			defer cancel()
		}
		for {
			got, err := nodeAt(ctx, c, u, sc.APIToken)
			if err == nil && got == node {
				break
			}
			if err == nil {
				err = fmt.Errorf("%s answers as node %q, not this run's app (%s): another process holds the port or the app id", u, got, node)
			}
			// A request cut off by the deadline says less than the answer
			// before it (another node, a refused connection): keep that.
			if last == nil || ctx.Err() == nil {
				last = err
			}
			if e := sc.LastError(); i == 1 && strings.Contains(e, "couldn't find name resolver") {
				return fmt.Errorf("%s was built without the name resolver its configuration (%s) names: "+
					"use a Dapr release build (`dapr init --slim`, DAPRD=) or bin/daprd (`make daprd`)", sc.Daprd, sc.ConfigFile)
			}
			select {
			case <-ctx.Done():
				return last
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	return nil
}

func nodeAt(ctx context.Context, c *http.Client, url, token string) (string, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	req.Header.Set("dapr-api-token", token)
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var v struct {
		Node string `json:"node"`
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if err := json.Unmarshal(body, &v); err != nil || resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s answers %s %.200s, not the service's /version", url, resp.Status, bytes.TrimSpace(body))
	}
	return v.Node, nil
}

// WriteTokens writes the pair's two API tokens to path (mode 0600) in
// KEY=value lines, for calling daprd's API by hand during a run:
// `curl -H "dapr-api-token: $DAPR_API_TOKEN" ...`.
func (p *Pair) WriteTokens(path string) error {
	s := "DAPR_API_TOKEN=" + p.Sidecar.APIToken + "\nAPP_API_TOKEN=" + p.Sidecar.AppAPIToken + "\n"
	return os.WriteFile(path, []byte(s), 0o600)
}

// Stop stops the app first (it drains its sessions through daprd), then
// daprd.
func (p *Pair) Stop() {
	_ = p.App.Stop(15 * time.Second)
	_ = p.Sidecar.Stop(10 * time.Second)
}

// Supervise blocks until ctx ends (nil) or one of the apps exits on its own
// (an error naming it).
func Supervise(ctx context.Context, pairs []*Pair) error {
	died := make(chan *Pair, len(pairs))
	for _, p := range pairs {
		go func() { <-p.App.Done(); died <- p }()
	}
	select {
	case <-ctx.Done():
		return nil
	case p := <-died:
		return fmt.Errorf("%s: the app stopped: %s", p.Name, p.App.ExitReason())
	}
}

// Ports hands out the ports of one run: the ones asked for when they are
// free, else (for a default the user did not choose) a free one, noted in
// Notes so the runner can say so.
type Ports struct {
	taken map[int]bool
	Notes []string
}

// Pick returns a port for what. want 0 means any free port. A taken port
// the user chose (explicit) is an error naming it.
func (ps *Ports) Pick(what string, want int, explicit bool) (int, error) {
	if ps.taken == nil {
		ps.taken = map[int]bool{}
	}
	if want != 0 && !ps.taken[want] && portFree(want) {
		ps.taken[want] = true
		return want, nil
	}
	if want != 0 && explicit {
		return 0, fmt.Errorf("%s port %d is in use by another process: choose another, or leave the flag out to get a free one", what, want)
	}
	for {
		p, err := FreePort()
		if err != nil {
			return 0, err
		}
		if ps.taken[p] {
			continue
		}
		ps.taken[p] = true
		if want != 0 {
			ps.Notes = append(ps.Notes, fmt.Sprintf("%s port %d is in use; using %d", what, want, p))
		}
		return p, nil
	}
}

// portFree reports whether port can be bound on loopback now.
func portFree(port int) bool {
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return false
	}
	ln.Close()
	return true
}

// LoopbackEnv and LoopbackArgs keep a sidecar's daprd-to-daprd traffic on
// loopback: the address it registers with the name resolver and the one
// its internal gRPC server listens on.
var (
	LoopbackEnv  = []string{"DAPR_HOST_IP=127.0.0.1"}
	LoopbackArgs = []string{"--dapr-internal-grpc-listen-address", "127.0.0.1"}
)

// LockDir takes an exclusive lock on dir (created if needed) for this
// process: two runs sharing one data directory would share its SQLite
// files. It fails naming the directory when another run holds it.
func LockDir(dir string) (unlock func(), err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(dir, "run.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("data directory %s is in use by another run: stop it, or give this one its own with -data", dir)
	}
	return func() { f.Close() }, nil
}
