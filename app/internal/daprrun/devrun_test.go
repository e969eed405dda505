package daprrun

import (
	"bytes"
	"io"
	"path/filepath"
	"strings"
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

// A dev run says which daprd it uses, resolves the data directory, and
// holds its lock until closed: a second run on the same directory is
// refused meanwhile and admitted after.
func TestOpenDevRunLocksTheDataDir(t *testing.T) {
	t.Cleanup(resetFound)
	resetFound()
	t.Setenv("HOME", t.TempDir())
	daprd := fakeDaprd(t, "1.14.4")
	t.Setenv("DAPRD", daprd)
	data := filepath.Join(t.TempDir(), "data")
	var out bytes.Buffer
	r, err := OpenDevRun(data, &out)
	if err != nil {
		t.Fatal(err)
	}
	if r.Daprd.Path != daprd || !strings.Contains(out.String(), "using daprd 1.14.4") {
		t.Errorf("daprd %+v, said %q", r.Daprd, out.String())
	}
	if r.Data != data {
		t.Errorf("data directory %q, want %q", r.Data, data)
	}
	if _, err := OpenDevRun(data, io.Discard); err == nil {
		t.Fatal("a second run on a locked data directory was admitted")
	}
	r.Close()
	again, err := OpenDevRun(data, io.Discard)
	if err != nil {
		t.Fatalf("after Close: %v", err)
	}
	again.Close()
}
