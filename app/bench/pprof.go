package bench

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/open-autoglm/autoglm/app/internal/daprrun"
)

// Profilers gives the app and its daprd a profiler each, on free ports:
// the addresses are set in o (AUTOGLM_PPROF and daprd's --profile-port) and
// returned.
func Profilers(o *ServiceOptions) (app, daprd string, err error) {
	port, err := daprrun.FreePort()
	if err != nil {
		return "", "", err
	}
	o.Pprof = "127.0.0.1:" + strconv.Itoa(port)
	if o.DaprdPprof, err = daprrun.FreePort(); err != nil {
		return "", "", err
	}
	return o.Pprof, "127.0.0.1:" + strconv.Itoa(o.DaprdPprof), nil
}

// CPUProfile starts a CPU profile of d from the Go profiler at addr, saved
// to path, and returns a function that waits for it to be saved.
func CPUProfile(addr string, d time.Duration, path string) func() {
	done := make(chan struct{})
	go func() {
		defer close(done)
		FetchProfile(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", addr, max(int(d.Seconds()), 1)), path)
	}()
	return func() { <-done }
}

// FetchProfile saves what url answers to path; a failure is reported on
// stderr, not returned: a missing profile does not fail a benchmark.
func FetchProfile(url, path string) {
	c := &http.Client{Timeout: 5 * time.Minute}
	res, err := c.Get(url)
	if err != nil {
		fmt.Fprintf(os.Stderr, "pprof: %v\n", err)
		return
	}
	defer res.Body.Close()
	f, err := os.Create(path)
	if err != nil {
		fmt.Fprintf(os.Stderr, "pprof: %v\n", err)
		return
	}
	defer f.Close()
	_, _ = io.Copy(f, res.Body)
}
