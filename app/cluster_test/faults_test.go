package cluster_test

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/open-autoglm/autoglm/app/client"
	"github.com/open-autoglm/autoglm/app/internal/cluster"
	"github.com/open-autoglm/autoglm/app/internal/testutil"
)

// load is a set of writers on a cluster's replicas (writer i starts on
// replica i mod 3 and knows every replica) writing a few documents.
type load struct {
	docs    []string
	writers []*writer
	stop    chan struct{}
	wg      sync.WaitGroup
}

func startLoad(t testing.TB, c *cluster.Cluster, clients, docs int) *load {
	t.Helper()
	l := &load{stop: make(chan struct{})}
	coll := collection()
	for i := range docs {
		l.docs = append(l.docs, fmt.Sprintf("%s/f%d", coll, i))
	}
	create(t, c.Nodes[0].URL(), l.docs)
	for i := range clients {
		l.writers = append(l.writers, dialWriter(t, fmt.Sprintf("w%d", i), c.WSURLs(i%len(c.Nodes)), l.docs))
	}
	for i, w := range l.writers {
		l.wg.Add(1)
		// Each writer starts on a different document.
		docs := append(append([]string(nil), l.docs[i%len(l.docs):]...), l.docs[:i%len(l.docs)]...)
		go w.run(docs, l.stop, &l.wg)
	}
	return l
}

// end stops the writers after their current op is answered.
func (l *load) end() {
	close(l.stop)
	l.wg.Wait()
}

func (l *load) acked() int {
	n := 0
	for _, w := range l.writers {
		w.mu.Lock()
		n += len(w.acks)
		w.mu.Unlock()
	}
	return n
}

// TestReplicaFailures: under load from 30 clients, one replica's app is
// killed with SIGKILL; its clients reconnect to the other replicas and
// resume, and no acknowledged op is lost. The killed app rejoins. Then one
// replica's daprd is stopped: that app reports not ready (503) and refuses
// writes as unavailable until daprd is back.
func TestReplicaFailures(t *testing.T) {
	c := cluster.Start(t, cluster.Options{Profile: "redis", Env: []string{"AUTOGLM_ANTI_ENTROPY=1s", "AUTOGLM_LOG_WINDOW=100000"}})

	t.Run("KillApp", func(t *testing.T) {
		l := startLoad(t, c, 30, 3)
		time.Sleep(1500 * time.Millisecond) // the load runs a while before the kill
		before := l.acked()
		victim := c.Nodes[0]
		killed := time.Now()
		victim.KillApp()
		var moved []*writer
		for i, w := range l.writers {
			if i%3 == 0 {
				moved = append(moved, w)
			}
		}
		reconnect := testutil.Eventually(t, 20*time.Second, "clients of the killed replica reconnect elsewhere", func() bool {
			for _, w := range moved {
				if !w.c.Connected() || w.c.URL() == victim.WSURL() {
					return false
				}
			}
			return true
		})
		resumed := l.acked()
		time.Sleep(1500 * time.Millisecond) // and on after the clients moved
		l.end()
		ops, took := verify(t, c.Nodes[1].URL(), l.docs, l.writers, 30*time.Second)
		t.Logf("kill -9 of replica 0 under load: %d acked before, %d at reconnect, %d in all; its 10 clients reconnected to other replicas %v after the kill; all 30 converged %v after the writers stopped; ops refused and resent: %v",
			before, resumed, ops, reconnect.Round(time.Millisecond), took.Round(time.Millisecond), refusals(l.writers))
		_ = killed

		// The replica comes back: a client there gets the current copy and
		// its writes reach everyone.
		start := time.Now()
		if err := victim.StartApp(); err != nil {
			t.Fatal(err)
		}
		back := dialWriter(t, "back", []string{victim.WSURL()}, l.docs)
		back.write(l.docs[0], 0)
		all := append(l.writers, back)
		if _, took := verify(t, c.Nodes[2].URL(), l.docs, all, 20*time.Second); took > 10*time.Second {
			t.Fatalf("rejoin took %v", took)
		}
		t.Logf("replica 0 restarted and serving in %v", time.Since(start).Round(time.Millisecond))
	})

	t.Run("SidecarDown", func(t *testing.T) {
		n := c.Nodes[2]
		doc := collection() + "/sc"
		create(t, n.URL(), []string{doc})
		w := dialWriter(t, "sc", []string{n.WSURL()}, []string{doc})
		stopped := time.Now()
		n.StopSidecar()
		down := testutil.Eventually(t, 10*time.Second, "/readyz 503 without daprd", func() bool { return n.Ready() == http.StatusServiceUnavailable })
		r := mustDo(t, "PATCH", n.URL()+"/v1/docs/"+doc, `{"ops":[{"op":"inc","path":"n","value":1}]}`)
		if r.Status != http.StatusServiceUnavailable || errCode(r) != "unavailable" {
			t.Fatalf("write without daprd: %d %s", r.Status, r.Raw)
		}
		// A sidecar restart takes seconds (image pull, component init).
		time.Sleep(3 * time.Second) // the outage under test
		downFor := time.Since(stopped)
		restarted := time.Now()
		if err := n.StartSidecar(); err != nil {
			t.Fatal(err)
		}
		healthy := time.Since(restarted)
		up := testutil.Eventually(t, 20*time.Second, "/readyz 200 with daprd back", func() bool { return n.Ready() == http.StatusOK })
		// Writes succeed again (the first may still find the app's
		// connection to daprd reconnecting: retried like any unavailable).
		var writable time.Duration
		testutil.Eventually(t, 20*time.Second, "writes accepted again", func() bool {
			r, err := do("PATCH", n.URL()+"/v1/docs/"+doc, `{"ops":[{"op":"inc","path":"n","value":1}]}`,
				"X-Client-ID", "sc-rest", "X-Op-ID", "1")
			writable = time.Since(restarted)
			return err == nil && r.Status == http.StatusOK
		})
		w.write(doc, 1)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		for _, other := range []*cluster.Node{c.Nodes[0], c.Nodes[1]} {
			o, err := client.Dial(ctx, other.WSURL(), client.Options{ClientID: fmt.Sprintf("sc-check-%d", other.Index)})
			if err != nil {
				t.Fatal(err)
			}
			d, err := o.Subscribe(ctx, doc, 0)
			if err != nil || d.Version() != 3 {
				t.Fatalf("replica %d sees %s at %d: %v", other.Index, doc, d.Version(), err)
			}
			o.Close()
		}
		if err := w.docs[doc].WaitVersion(ctx, 3); err != nil {
			t.Fatal(err)
		}
		t.Logf("daprd stopped: /readyz 503 after %v (writes refused as unavailable, %v without daprd); daprd healthy %v after restart, /readyz 200 %v later, writes accepted %v after the restart",
			down.Round(time.Millisecond), downFor.Round(time.Millisecond), healthy.Round(time.Millisecond), up.Round(time.Millisecond), writable.Round(time.Millisecond))
	})
}
