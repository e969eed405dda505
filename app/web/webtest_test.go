//go:build webtest

package web_test

// The JavaScript suites, run against a real replica (app + daprd): `make
// test-js` (node --test test/) and `make test-browser` (Playwright driving
// Debian's Chromium, node --test e2e/). They need `npm ci` in app/web first
// and fail — never skip — when node, the npm packages or Chromium are
// missing.

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/open-autoglm/autoglm/app/internal/daprtest"
)

func TestJS(t *testing.T) {
	r := daprtest.Start(t, daprtest.Options{})
	runNode(t, r.URL(), nil, "test/")
}

func TestBrowser(t *testing.T) {
	chromium := os.Getenv("CHROMIUM")
	if chromium == "" {
		chromium = "/usr/bin/chromium"
	}
	if _, err := os.Stat(chromium); err != nil {
		t.Fatalf("Chromium is required for the browser tests (apt-get install -y chromium, or set CHROMIUM): %v", err)
	}
	r := daprtest.Start(t, daprtest.Options{})
	artifacts, err := filepath.Abs(filepath.Join("e2e", "artifacts"))
	if err != nil {
		t.Fatal(err)
	}
	runNode(t, r.URL(), []string{"CHROMIUM=" + chromium, "ARTIFACTS=" + artifacts, "CONTROL_URL=" + control(t, r)}, "e2e/")
}

// control serves POST /stop (the replica goes down: app and daprd) and
// POST /start (it comes back on the same port; answered once it is ready)
// for the outage tests.
func control(t *testing.T, r *daprtest.Replica) string {
	var mu sync.Mutex
	mux := http.NewServeMux()
	mux.HandleFunc("POST /stop", func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		r.Stop()
	})
	mux.HandleFunc("POST /start", func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		r.Restart()
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL
}

// TestTextBench runs the text-field benchmark against Yjs
// (scripts/textbench.mjs; `make bench-text`, part of `make bench`) on a
// real replica, and writes its figures to TEXTBENCH_OUT (default
// bench/out/text.json).
func TestTextBench(t *testing.T) {
	r := daprtest.Start(t, daprtest.Options{})
	out := os.Getenv("TEXTBENCH_OUT")
	if out == "" {
		out = filepath.Join("..", "..", "bench", "out", "text.json")
	}
	out, err := filepath.Abs(out)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		t.Fatal(err)
	}
	runNode(t, r.URL(), []string{"TEXTBENCH_OUT=" + out}, "--expose-gc", "scripts/textbench.mjs")
}

// runNode runs node with args (by default `--test` of a directory) in
// app/web, against the replica at url.
func runNode(t *testing.T, url string, env []string, args ...string) {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal("node (20 or later) is required:", err)
	}
	for _, pkg := range []string{"ws", "playwright-core", "esbuild", "typescript", "yjs"} {
		if _, err := os.Stat(filepath.Join("node_modules", pkg)); err != nil {
			t.Fatalf("npm package %s is missing: run `npm ci` in app/web (make test-js does)", pkg)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if len(args) == 1 {
		test := []string{"--test", "--test-reporter=spec", "--test-concurrency=1"}
		// WEBTEST_RUN=<regexp> runs only the tests whose names match.
		if run := os.Getenv("WEBTEST_RUN"); run != "" {
			test = append(test, "--test-name-pattern="+run)
		}
		args = append(test, args[0])
	}
	cmd := exec.CommandContext(ctx, node, args...)
	cmd.Env = append(os.Environ(), append(env, "AUTOGLM_URL="+url)...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("node %v: %v", args, err)
	}
}
