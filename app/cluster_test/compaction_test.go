package cluster_test

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/internal/cluster"
	"github.com/open-autoglm/autoglm/app/internal/cluster/backend"
	"github.com/open-autoglm/autoglm/app/internal/testutil"
)

// TestCompactionLease: of two replicas, one holds the compaction lease and
// compacts every document (tail archived, log trimmed to the window, marks
// outside it pruned). Killed with SIGKILL, it is replaced by the other
// within the lease time (plus one poll), which goes on compacting. Every
// document stays readable with the same data and versions, and a client
// watching them converges.
func TestCompactionLease(t *testing.T) {
	const (
		window = 10
		lease  = 2 * time.Second
	)
	c := cluster.Start(t, cluster.Options{Profile: "redis", Replicas: 2, Env: []string{
		"AUTOGLM_COMPACTION_INTERVAL=300ms", "AUTOGLM_COMPACTION_LEASE=" + lease.String(), "AUTOGLM_COMPACTION_QUIET=300ms",
		"AUTOGLM_LOG_WINDOW=" + strconv.Itoa(window), "AUTOGLM_ANTI_ENTROPY=1s",
	}})
	// Two collections no config declares: the job finds them through the
	// registry the replicas keep.
	colls := []string{collection(), collection()}
	var docs []string
	for i := range 6 {
		docs = append(docs, fmt.Sprintf("%s/d%d", colls[i%2], i))
	}
	create(t, c.Nodes[0].URL(), docs)
	watcher := dialWriter(t, "watcher", c.WSURLs(1), docs)
	write := func(n *cluster.Node, from, to int) {
		for i := from; i < to; i++ {
			for _, d := range docs {
				r := mustDo(t, "PATCH", n.URL()+"/v1/docs/"+d, fmt.Sprintf(`{"ops":[{"op":"inc","path":"n","value":1},{"op":"set","path":"last","value":%d}]}`, i),
					"X-Client-ID", fmt.Sprintf("c%d", i/5), "X-Op-ID", strconv.Itoa(i%5+1))
				if r.Status != 200 {
					t.Fatalf("write %s: %d %s", d, r.Status, r.Raw)
				}
			}
		}
	}
	write(c.Nodes[0], 0, 25)

	lockKey := "lock||autoglm||compaction:" + c.Topic
	holder := func() *cluster.Node {
		owner, _ := backend.RedisString(backend.RedisAddr(), "GET", lockKey)
		for _, n := range c.Nodes {
			if strings.HasPrefix(owner, n.NodeID+"/") {
				return n
			}
		}
		return nil
	}
	var first *cluster.Node
	testutil.Eventually(t, 10*time.Second, "a replica holds the compaction lease", func() bool { first = holder(); return first != nil })
	took := testutil.Eventually(t, 20*time.Second, "documents compacted", func() bool { return compacted(t, docs, window) == nil })
	t.Logf("replica %d holds the lease; every document compacted within %v", first.Index, took.Round(time.Millisecond))

	first.KillApp()
	var next *cluster.Node
	takeover := testutil.Eventually(t, lease+5*time.Second, "the other replica takes the lease over", func() bool {
		next = holder()
		return next != nil && next != first
	})
	if takeover > lease+lease/5+time.Second {
		t.Fatalf("takeover after %v; want within the lease (%v) plus one poll", takeover, lease)
	}
	write(next, 25, 30)
	again := testutil.Eventually(t, 20*time.Second, "new writes compacted by the new holder", func() bool { return compacted(t, docs, window) == nil })

	for _, d := range docs {
		v, data := stored(t, next.URL(), d)
		if v != 31 || data["n"] != 30.0 || data["last"] != 29.0 {
			t.Fatalf("%s after compaction: v%d %v", d, v, data)
		}
		// The window is served from the log keys alone; further back is a
		// snapshot.
		r := mustDo(t, "GET", fmt.Sprintf("%s/v1/docs/%s/changes?since=%d", next.URL(), d, v-window), "")
		if cs, _ := r.Body["changes"].([]any); len(cs) != window {
			t.Fatalf("%s: changes since %d: %s", d, v-window, r.Raw)
		}
		if r := mustDo(t, "GET", fmt.Sprintf("%s/v1/docs/%s/changes?since=%d", next.URL(), d, v-window-1), ""); r.Body["snapshot"] == nil {
			t.Fatalf("%s: behind the window wants a snapshot: %s", d, r.Raw)
		}
	}
	testutil.Eventually(t, 10*time.Second, "the watcher converges", func() bool {
		for _, d := range docs {
			if watcher.docs[d].Version() != 31 {
				return false
			}
		}
		return true
	})
	for _, d := range docs {
		if _, data := stored(t, next.URL(), d); checksum(data) != checksum(watcher.docs[d].Data()) {
			t.Fatalf("%s: the watcher has %v, the store %v", d, watcher.docs[d].Data(), data)
		}
	}
	t.Logf("lease holder killed: replica %d took over %v later (lease %v, renewed every %v, polled every %v); it compacted the next writes within %v; %d documents read back with the same data and versions",
		next.Index, takeover.Round(time.Millisecond), lease, (lease / 3).Round(time.Millisecond), lease/5, again.Round(time.Millisecond), len(docs))
}

// compacted checks the stored form of each document in Redis: tail
// archived, log trimmed to the window (keys below it gone, keys in it
// present), no idempotency mark older than the window.
func compacted(t testing.TB, docs []string, window int64) error {
	t.Helper()
	for _, d := range docs {
		k, err := core.ParseKey(d)
		if err != nil {
			t.Fatal(err)
		}
		base := "autoglm||" + k.Collection + ":" + k.ID
		raw, err := backend.RedisString(backend.RedisAddr(), "HGET", base, "data")
		if err != nil || raw == "" {
			return fmt.Errorf("%s: %q %v", d, raw, err)
		}
		var doc core.Document
		if err := json.Unmarshal([]byte(raw), &doc); err != nil {
			t.Fatalf("%s: %v", d, err)
		}
		switch {
		case len(doc.Tail) > 0:
			return fmt.Errorf("%s: tail not archived", d)
		case doc.LogStart != doc.Version-window+1:
			return fmt.Errorf("%s: log starts at %d, version %d", d, doc.LogStart, doc.Version)
		}
		for v := max(doc.LogStart-15, 1); v <= doc.Version; v++ {
			n, err := backend.Redis(backend.RedisAddr(), "EXISTS", base+":log:"+strconv.FormatInt(v, 10))
			if err != nil {
				return err
			}
			if want := v >= doc.LogStart; (n.(int64) == 1) != want {
				return fmt.Errorf("%s: log entry %d exists: %v, want %v", d, v, n, want)
			}
		}
	}
	return nil
}

// TestAntiEntropyAfterCompaction: a replica that missed every broadcast
// (it listens on another topic) repairs a document whose tail compaction
// has already archived to the op log, so anti-entropy finds no changes in
// the document itself.
func TestAntiEntropyAfterCompaction(t *testing.T) {
	writes := cluster.Start(t, cluster.Options{Profile: "redis", Replicas: 1, Env: []string{
		"AUTOGLM_COMPACTION_INTERVAL=200ms", "AUTOGLM_COMPACTION_QUIET=100ms", "AUTOGLM_LOG_WINDOW=1000"}})
	watches := cluster.Start(t, cluster.Options{Profile: "redis", Replicas: 1, Env: []string{
		"AUTOGLM_COMPACTION_INTERVAL=0", "AUTOGLM_ANTI_ENTROPY=3s"}})
	doc := collection() + "/ae"
	create(t, writes.Nodes[0].URL(), []string{doc})
	watcher := dialWriter(t, "watcher", []string{watches.Nodes[0].WSURL()}, []string{doc})
	start := time.Now()
	for i := range 5 {
		mustDo(t, "PATCH", writes.Nodes[0].URL()+"/v1/docs/"+doc, fmt.Sprintf(`{"ops":[{"op":"inc","path":"n","value":1},{"op":"set","path":"last","value":%d}]}`, i))
	}
	archived := testutil.Eventually(t, 5*time.Second, "tail archived", func() bool {
		raw, _ := backend.RedisString(backend.RedisAddr(), "HGET", "autoglm||"+strings.Replace(doc, "/", ":", 1), "data")
		var d core.Document
		return json.Unmarshal([]byte(raw), &d) == nil && d.Version == 6 && len(d.Tail) == 0
	})
	testutil.Eventually(t, 15*time.Second, "the watcher repairs from the op log", func() bool { return watcher.docs[doc].Version() == 6 })
	if _, data := stored(t, writes.Nodes[0].URL(), doc); checksum(data) != checksum(watcher.docs[doc].Data()) {
		t.Fatalf("watcher %v, store %v", watcher.docs[doc].Data(), data)
	}
	t.Logf("tail archived %v after the writes; a replica without broadcasts converged %v after them (anti-entropy every 3s)",
		archived.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
}
