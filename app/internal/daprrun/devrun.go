package daprrun

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
)

// DevRun is one run of the dev runners (autoglm-dev, saga-dev): the daprd
// it uses, the repository, and a data directory it holds the lock of, with
// the pairs it started. Close stops them, last started first.
type DevRun struct {
	Daprd Binary
	Root  string // the repository
	Data  string // the data directory, absolute
	out   io.Writer
	pairs []*Pair
	close func()
}

// OpenDevRun finds the daprd (and says which on out), the repository root,
// and takes the lock of dataDir (relative to the working directory), so
// one run at a time uses it.
func OpenDevRun(dataDir string, out io.Writer) (*DevRun, error) {
	daprd, err := FindDaprd(false)
	if err != nil {
		return nil, err
	}
	fmt.Fprintln(out, "using", daprd)
	root, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	data, err := filepath.Abs(dataDir)
	if err != nil {
		return nil, err
	}
	unlock, err := LockDir(data)
	if err != nil {
		return nil, err
	}
	return &DevRun{Daprd: daprd, Root: root, Data: data, out: out, close: unlock}, nil
}

// InRoot makes each relative, non-empty path relative to the repository.
func (r *DevRun) InRoot(paths ...*string) {
	for _, p := range paths {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(r.Root, *p)
		}
	}
}

// Start starts a pair with this run's daprd and writes its API tokens to
// tokens (see WriteTokens); the pair is stopped on Close.
func (r *DevRun) Start(ctx context.Context, o PairOptions, tokens string) (*Pair, error) {
	o.Sidecar.Daprd = r.Daprd.Path
	p, err := StartPair(ctx, o)
	if err != nil {
		return nil, err
	}
	r.pairs = append(r.pairs, p)
	return p, p.WriteTokens(tokens)
}

// Supervise is Supervise of the pairs started so far.
func (r *DevRun) Supervise(ctx context.Context) error { return Supervise(ctx, r.pairs) }

// Close stops the pairs, last started first, says so once any was started,
// and gives the data directory's lock back.
func (r *DevRun) Close() {
	for i := len(r.pairs) - 1; i >= 0; i-- {
		r.pairs[i].Stop()
	}
	if len(r.pairs) > 0 {
		fmt.Fprintln(r.out, "stopped")
	}
	r.close()
}
