package daprrun

import (
	"bytes"
	"path/filepath"
	"testing"
)

func TestDevRunInRootAndClose(t *testing.T) {
	root := t.TempDir()
	unlocked := 0
	var out bytes.Buffer
	r := &DevRun{Root: root, out: &out, close: func() { unlocked++ }}
	rel, abs, empty := "config/daprd.yaml", filepath.Join(t.TempDir(), "x.yaml"), ""
	r.InRoot(&rel, &abs, &empty)
	if want := filepath.Join(root, "config/daprd.yaml"); rel != want {
		t.Errorf("relative path = %q, want %q", rel, want)
	}
	if abs == "" || !filepath.IsAbs(abs) || filepath.Dir(abs) == root {
		t.Errorf("absolute path moved: %q", abs)
	}
	if empty != "" {
		t.Errorf("empty path became %q", empty)
	}
	// Nothing started: the lock is given back and no stop is reported.
	r.Close()
	if unlocked != 1 || out.Len() != 0 {
		t.Fatalf("Close without pairs: unlocked %d times, printed %q", unlocked, out.String())
	}
}
