//go:build webtest

package web_test

// The JavaScript suites, run against a real replica (app + daprd): `make
// test-js` (node --test test/) and `make test-browser` (Playwright driving
// Debian's Chromium, node --test e2e/). They need `npm ci` in app/web first
// and fail — never skip — when node, the npm packages or Chromium are
// missing.

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
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
	runNode(t, r.URL(), []string{"CHROMIUM=" + chromium, "ARTIFACTS=" + artifacts}, "e2e/")
}

func runNode(t *testing.T, url string, env []string, dir string) {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal("node (20 or later) is required:", err)
	}
	for _, pkg := range []string{"ws", "playwright-core", "esbuild"} {
		if _, err := os.Stat(filepath.Join("node_modules", pkg)); err != nil {
			t.Fatalf("npm package %s is missing: run `npm ci` in app/web (make test-js does)", pkg)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "--test", "--test-reporter=spec", "--test-concurrency=1", dir)
	cmd.Env = append(os.Environ(), append(env, "AUTOGLM_URL="+url)...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("node --test %s: %v", dir, err)
	}
}
