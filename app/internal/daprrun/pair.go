package daprrun

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
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
	side, err := Start(sc)
	if err != nil {
		_ = app.Stop(5 * time.Second)
		return nil, err
	}
	p := &Pair{Name: o.Name, App: app, Sidecar: side}
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := side.WaitHealthy(wctx); err != nil {
		p.Stop()
		return nil, fmt.Errorf("%s: %w (see %s)", o.Name, err, o.LogFile)
	}
	return p, nil
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
	died := make(chan string, len(pairs))
	for _, p := range pairs {
		go func() { <-p.App.Done(); died <- p.Name }()
	}
	select {
	case <-ctx.Done():
		return nil
	case who := <-died:
		return fmt.Errorf("%s exited", who)
	}
}
