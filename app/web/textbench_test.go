//go:build webtest

package web_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/open-autoglm/autoglm/app/internal/daprtest"
)

// TestTextBench runs the text-field benchmark against Yjs
// (scripts/textbench.mjs; `make bench` runs it) on a real replica, and
// writes its figures to TEXTBENCH_OUT (default bench/out/text.json).
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
	if _, err := os.Stat(filepath.Join("node_modules", "yjs")); err != nil {
		t.Fatal("npm package yjs is missing: run `npm ci` in app/web")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", "--expose-gc", "scripts/textbench.mjs")
	cmd.Env = append(os.Environ(), "AUTOGLM_URL="+r.URL(), "TEXTBENCH_OUT="+out)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("textbench: %v", err)
	}
}
