package cluster_test

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/open-autoglm/autoglm/app/internal/cluster"
	"github.com/open-autoglm/autoglm/app/internal/cluster/backend"
)

// TestLostBroadcasts: broadcasts are dropped at the broker while clients
// write, and every client still converges, through gap pulls and
// anti-entropy (AUTOGLM_ANTI_ENTROPY=1s here).
//
// redis: the broadcast stream is trimmed to nothing every few
// milliseconds while one replica's daprd is paused, so that replica's
// consumer group misses every change of the phase, including the last
// ones, which no later broadcast reveals.
//
// postgres: the NATS server is paused (SIGSTOP) for 3 seconds under load:
// publishes time out and are lost, deliveries are delayed.
func TestLostBroadcasts(t *testing.T) {
	t.Run("redis", func(t *testing.T) {
		c := cluster.Start(t, cluster.Options{Profile: "redis", Env: []string{"AUTOGLM_ANTI_ENTROPY=1s", "AUTOGLM_LOG_WINDOW=100000"}})
		coll := collection()
		docs := []string{coll + "/lb0", coll + "/lb1", coll + "/lb2"}
		create(t, c.Nodes[0].URL(), docs)
		paused := c.Nodes[2]
		var readers, writers []*writer
		for i := range 10 {
			readers = append(readers, dialWriter(t, fmt.Sprintf("r%d", i), []string{paused.WSURL()}, docs))
		}
		for i := range 20 {
			writers = append(writers, dialWriter(t, fmt.Sprintf("w%d", i), []string{c.Nodes[i%2].WSURL()}, docs))
		}
		gaps0 := metricSum(t, c.Nodes, "autoglm_gaps_repaired_total")

		var trimmed atomic.Int64
		stopTrim := make(chan struct{})
		trimDone := make(chan struct{})
		trim := func() {
			n, err := backend.Redis(backend.RedisAddr(), "XTRIM", c.Topic, "MAXLEN", "0")
			if err == nil {
				trimmed.Add(n.(int64))
			}
		}
		go func() {
			defer close(trimDone)
			for {
				select {
				case <-stopTrim:
					return
				case <-time.After(2 * time.Millisecond):
					trim()
				}
			}
		}()
		resume, err := pause(paused.SidecarPid(), 20*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer resume()
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for i, w := range writers {
			wg.Add(1)
			go w.run(append(docs[i%3:], docs[:i%3]...), stop, &wg)
		}
		time.Sleep(2 * time.Second) // the writers run for 2 s
		close(stop)
		wg.Wait()
		time.Sleep(100 * time.Millisecond) // the last publishes reach the stream
		close(stopTrim)
		<-trimDone
		trim()
		resume()
		ops, took := verify(t, c.Nodes[0].URL(), docs, append(readers, writers...), 30*time.Second)
		gaps := metricSum(t, c.Nodes, "autoglm_gaps_repaired_total") - gaps0
		t.Logf("redis: %d ops while the broadcast stream was trimmed (%d entries dropped) and replica 2's daprd paused; all 30 clients converged %v after it resumed; %.0f gaps pulled from the op log",
			ops, trimmed.Load(), took.Round(time.Millisecond), gaps)
	})

	t.Run("postgres", func(t *testing.T) {
		release, err := backend.Exclusive(5 * time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		defer release()
		c := cluster.Start(t, cluster.Options{Profile: "postgres", Env: []string{"AUTOGLM_ANTI_ENTROPY=1s", "AUTOGLM_LOG_WINDOW=100000"}})
		pid := natsPid(t)
		l := startLoad(t, c, 30, 3)
		gaps0 := metricSum(t, c.Nodes, "autoglm_gaps_repaired_total")
		failed0 := metricSum(t, c.Nodes, "autoglm_broadcast_publish_failures_total?")
		time.Sleep(time.Second) // the load runs a while before the pause
		before := l.acked()
		resume, err := pause(pid, 15*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer resume()
		time.Sleep(3 * time.Second) // the pause under test
		during := l.acked() - before
		resume()
		at := time.Now()
		time.Sleep(time.Second) // the load goes on after the resume
		l.end()
		ops, took := verify(t, c.Nodes[0].URL(), l.docs, l.writers, 30*time.Second)
		gaps := metricSum(t, c.Nodes, "autoglm_gaps_repaired_total") - gaps0
		failed := metricSum(t, c.Nodes, "autoglm_broadcast_publish_failures_total?") - failed0
		t.Logf("postgres: NATS paused 3s under load: %d ops acked during the pause, %d in all; %.0f broadcasts failed to publish, %.0f gaps pulled; all 30 clients converged %v after the writers stopped (%v after NATS resumed); ops refused and resent: %v",
			during, ops, failed, gaps, took.Round(time.Millisecond), time.Since(at).Round(time.Millisecond), refusals(l.writers))
	})
}

// pause stops process pid (SIGSTOP) until resume is called; calls after
// the first do nothing, so a test may both defer it and call it. The
// process runs again even if the test binary dies first (a timeout): a
// detached shell sends SIGCONT after safety, which does nothing to a
// process that is already running.
func pause(pid int, safety time.Duration) (resume func() error, err error) {
	cmd := exec.Command("sh", "-c", fmt.Sprintf("sleep %d; kill -CONT %d 2>/dev/null", int(safety.Seconds()), pid))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("SIGCONT safety net: %w", err)
	}
	go func() { _ = cmd.Wait() }()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		return nil, err
	}
	resumed := false
	return func() error {
		if resumed {
			return nil
		}
		resumed = true
		return syscall.Kill(pid, syscall.SIGCONT)
	}, nil
}

// natsPid finds the local NATS server to pause.
func natsPid(t testing.TB) int {
	t.Helper()
	out, err := exec.Command("pgrep", "-x", "nats-server").Output()
	if err != nil {
		t.Fatalf("nats-server process not found: %v", err)
	}
	f := strings.Fields(string(out))
	if len(f) != 1 {
		t.Fatalf("want one nats-server, found %q", out)
	}
	pid, err := strconv.Atoi(f[0])
	if err != nil || pid == os.Getpid() {
		t.Fatalf("nats-server pid %q", f[0])
	}
	return pid
}
