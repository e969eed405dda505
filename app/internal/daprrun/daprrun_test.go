package daprrun

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// takenPort returns a loopback port held by a listener until the test ends.
func takenPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.Addr().(*net.TCPAddr).Port
}

func TestPortsMovesATakenDefaultAndSaysSo(t *testing.T) {
	taken := takenPort(t)

	var ps Ports
	got, err := ps.Pick("app", taken, false)
	if err != nil {
		t.Fatal(err)
	}
	if got == taken || got == 0 {
		t.Fatalf("Pick(taken default %d) = %d, want another free port", taken, got)
	}
	if len(ps.Notes) != 1 || !strings.Contains(ps.Notes[0], strconv.Itoa(taken)) || !strings.Contains(ps.Notes[0], strconv.Itoa(got)) {
		t.Fatalf("notes %q do not name the taken and the chosen port", ps.Notes)
	}
	// A port handed out once is not handed out again in the same run.
	again, err := ps.Pick("daprd HTTP", got, false)
	if err != nil || again == got {
		t.Fatalf("second Pick(%d) = %d, %v: want a different port", got, again, err)
	}
}

func TestPortsRefusesATakenExplicitPort(t *testing.T) {
	taken := takenPort(t)
	var ps Ports
	if _, err := ps.Pick("app", taken, true); err == nil || !strings.Contains(err.Error(), strconv.Itoa(taken)) {
		t.Fatalf("Pick(taken explicit) error = %v, want one naming port %d", err, taken)
	}
	free, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	if got, err := ps.Pick("app", free, true); err != nil || got != free {
		t.Fatalf("Pick(free explicit %d) = %d, %v", free, got, err)
	}
}

func TestLockDirAdmitsOneRun(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	unlock, err := LockDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := LockDir(dir); err == nil || !strings.Contains(err.Error(), dir) {
		t.Fatalf("second LockDir error = %v, want one naming %s", err, dir)
	}
	unlock()
	unlock2, err := LockDir(dir)
	if err != nil {
		t.Fatalf("LockDir after unlock: %v", err)
	}
	unlock2()
}

// fakeDaprd writes an executable that answers --version like daprd does.
func fakeDaprd(t *testing.T, version string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "daprd")
	if err := os.WriteFile(p, []byte("#!/bin/sh\necho "+version+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func resetFound() {
	found.Lock()
	found.bin = nil
	found.Unlock()
}

func TestFindDaprdChecksTheVersion(t *testing.T) {
	t.Cleanup(resetFound)
	t.Setenv("HOME", t.TempDir()) // no ~/.dapr/bin/daprd
	for _, tc := range []struct {
		version string
		ok      bool
	}{{"1.14.0", true}, {"1.14.4", true}, {"1.15.0", false}, {"1.1", false}, {"edge", false}} {
		resetFound()
		p := fakeDaprd(t, tc.version)
		t.Setenv("DAPRD", p)
		b, err := FindDaprd(false)
		if tc.ok && (err != nil || b.Path != p || b.Version != tc.version || b.From != "DAPRD") {
			t.Errorf("version %s: FindDaprd = %+v, %v; want %s from DAPRD", tc.version, b, err, p)
		}
		if !tc.ok && (err == nil || !strings.Contains(err.Error(), tc.version)) {
			t.Errorf("version %s: FindDaprd = %+v, %v; want an error naming the version", tc.version, b, err)
		}
	}
}

func TestFindDaprdPrefersAnInstalledDaprd(t *testing.T) {
	t.Cleanup(resetFound)
	resetFound()
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("DAPRD", "")
	t.Setenv("PATH", t.TempDir())
	// Nothing installed: -installed finds nothing and says what it tried.
	if b, err := FindDaprd(true); err == nil || !strings.Contains(err.Error(), ".dapr") {
		t.Fatalf("FindDaprd(installed only) with nothing installed = %+v, %v", b, err)
	}
	// The Dapr CLI's slim install.
	resetFound()
	slim := filepath.Join(home, ".dapr", "bin", "daprd")
	if err := os.MkdirAll(filepath.Dir(slim), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(fakeDaprd(t, "1.14.1"), slim); err != nil {
		t.Fatal(err)
	}
	if b, err := FindDaprd(false); err != nil || b.Path != slim {
		t.Fatalf("FindDaprd = %+v, %v; want %s", b, err, slim)
	}
	// A daprd on PATH of the wrong version is skipped, with the reason
	// in the error when nothing else fits.
	resetFound()
	os.Remove(slim)
	dir := t.TempDir()
	if err := os.Rename(fakeDaprd(t, "1.13.2"), filepath.Join(dir, "daprd")); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir)
	if b, err := FindDaprd(true); err == nil || !strings.Contains(err.Error(), "1.13.2") {
		t.Fatalf("FindDaprd with daprd 1.13.2 on PATH = %+v, %v", b, err)
	}
}

func TestExitReasonNamesTheLastError(t *testing.T) {
	var tl tail
	tl.Write([]byte("time=x level=info msg=\"starting\"\n"))
	tl.Write([]byte("time=x level=error msg=\"listen tcp 127.0.0.1:8080: bind: address already in use\"\n"))
	tl.Write([]byte("autoglm: listen tcp 127.0.0.1:8080: bind: address already in use\n"))
	if got, want := tl.lastError(), "listen tcp 127.0.0.1:8080: bind: address already in use"; got != want {
		t.Fatalf("lastError = %q, want %q", got, want)
	}
	var plain tail
	plain.Write([]byte("autoglm: open config/collections.yaml: no such file\n"))
	if got := plain.reason(); got != "autoglm: open config/collections.yaml: no such file" {
		t.Fatalf("reason = %q", got)
	}
}

// The ports FreePort hands out in one process never repeat, even when the
// kernel gives a just-closed port out again: a daprd's HTTP and metrics
// ports once came out equal and it could not start.
func TestFreePortNeverRepeats(t *testing.T) {
	seen := map[int]bool{}
	for range 500 {
		p, err := FreePort()
		if err != nil {
			t.Fatal(err)
		}
		if seen[p] {
			t.Fatalf("port %d handed out twice", p)
		}
		seen[p] = true
	}
}

func TestPortRaceLost(t *testing.T) {
	for log, want := range map[string]bool{
		"listen tcp 127.0.0.1:8080: bind: address already in use\n":                                                   true,
		"level=fatal msg=\"Fatal error from runtime: failed to start HTTP server: could not listen on any endpoint\"": true,
		"level=fatal msg=\"component statestore: connection refused\"":                                                false,
	} {
		if got := PortRaceLost(log); got != want {
			t.Errorf("PortRaceLost(%q) = %v, want %v", log, got, want)
		}
	}
}

// daprd runs on one P unless the environment, or the sidecar's own Env,
// sets GOMAXPROCS; exec keeps the last value of a repeated variable.
func TestSidecarEnvHasOneProcUnlessSet(t *testing.T) {
	last := func(env []string, name string) string {
		v := ""
		for _, e := range env {
			if k, val, _ := strings.Cut(e, "="); k == name {
				v = val
			}
		}
		return v
	}
	o := Options{APIToken: "t"}
	if got := last(o.env([]string{"PATH=/bin"}), "GOMAXPROCS"); got != "1" {
		t.Fatalf("GOMAXPROCS=%q, want 1", got)
	}
	if got := last(o.env([]string{"GOMAXPROCS=4"}), "GOMAXPROCS"); got != "4" {
		t.Fatalf("with GOMAXPROCS=4 in the environment: %q, want 4", got)
	}
	o.Env = []string{"GOMAXPROCS=2"}
	env := o.env([]string{"GOMAXPROCS=4"})
	if got := last(env, "GOMAXPROCS"); got != "2" {
		t.Fatalf("with GOMAXPROCS=2 in Env: %q, want 2", got)
	}
	if got := last(env, "DAPR_API_TOKEN"); got != "t" {
		t.Fatalf("DAPR_API_TOKEN=%q, want t", got)
	}
}
