// Package cluster_test runs replicas as separate processes (service binary
// + daprd each) on the real-backend profiles and checks that every replica
// sees every change and nothing acknowledged is lost under faults: killed
// replicas, stopped sidecars, lost broadcasts, a restarted database. It also
// covers presence across replicas, the compaction lease, the tasks queue and
// the transaction semantics the store relies on.
package cluster_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/open-autoglm/autoglm/app/client"
	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/internal/cluster"
	"github.com/open-autoglm/autoglm/app/internal/rest"
)

func TestMain(m *testing.M) { os.Exit(cluster.Main(m)) }

type resp = rest.Response

func do(method, url, body string, hdr ...string) (resp, error) {
	return rest.Do(method, url, body, hdr...)
}

// mustDo sends a request; an error sending it fails the test.
var mustDo = rest.Must

func errCode(r resp) string { return r.Code() }

// stored reads a document's version and data over REST.
func stored(t testing.TB, base, doc string) (int64, map[string]any) {
	t.Helper()
	r := mustDo(t, "GET", base+"/v1/docs/"+doc, "")
	if r.Status != 200 {
		t.Fatalf("GET %s: %d %s", doc, r.Status, r.Raw)
	}
	data, _ := r.Body["data"].(map[string]any)
	return int64(r.Body["version"].(float64)), data
}

// checksum is a digest of a document's data (encoding/json sorts map keys).
func checksum(data map[string]any) string {
	b, _ := json.Marshal(data)
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:8])
}

// logged walks a document's op log from version 2 (version 1 is written by
// the test's setup; since=0 would answer a snapshot) and returns, per
// "client/op", the versions it appears at. It fails unless the versions are
// dense up to want.
func logged(t testing.TB, base, doc string, want int64) map[string][]int64 {
	t.Helper()
	seen := map[string][]int64{}
	for since := int64(1); since < want; {
		r := mustDo(t, "GET", fmt.Sprintf("%s/v1/docs/%s/changes?since=%d", base, doc, since), "")
		cs, _ := r.Body["changes"].([]any)
		if len(cs) == 0 {
			t.Fatalf("%s: log ends at %d of %d: %s", doc, since, want, r.Raw)
		}
		for _, c := range cs {
			m := c.(map[string]any)
			v := int64(m["v"].(float64))
			if v != since+1 {
				t.Fatalf("%s: log not dense: %d after %d", doc, v, since)
			}
			since = v
			key := fmt.Sprintf("%v/%v", m["by"], m["op"])
			seen[key] = append(seen[key], v)
		}
	}
	return seen
}

// ack is one acknowledged op.
type ack struct {
	client, doc string
	op          uint64
	version     int64
	dup         bool
}

// writer is a client that writes and watches the test's documents.
type writer struct {
	id   string
	c    *client.Client
	docs map[string]*client.Doc

	mu      sync.Mutex
	acks    []ack
	fails   []error
	refused map[core.Code]int
}

func dialWriter(t testing.TB, id string, urls []string, docs []string) *writer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, urls[0], client.Options{ClientID: id, URLs: urls[1:],
		MinBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	w := &writer{id: id, c: c, docs: map[string]*client.Doc{}, refused: map[core.Code]int{}}
	for _, d := range docs {
		cd, err := c.Subscribe(ctx, d, 0)
		if err != nil {
			t.Fatalf("%s: subscribe %s: %v", id, d, err)
		}
		w.docs[d] = cd
	}
	return w
}

// write sends one op (closed loop: it waits for the answer, across
// reconnects) that increments n and records who wrote last. An op refused
// as retryable (unavailable, or conflict: the server gave up after its
// ETag-conflict retries) stored nothing; it is sent again as a new op, as
// a client would.
func (w *writer) write(doc string, seq int) {
	deadline := time.Now().Add(60 * time.Second)
	for attempt := 0; time.Now().Before(deadline); attempt++ {
		ch := w.c.Send(doc, 0, client.Inc("n", 1), client.Set("by."+w.id, seq))
		select {
		case a := <-ch:
			w.mu.Lock()
			if a.Err != nil && (a.Err.Code == core.CodeConflict || a.Err.Code == core.CodeUnavailable) {
				w.refused[a.Err.Code]++
				w.mu.Unlock()
				time.Sleep(min(time.Duration(attempt+1)*20*time.Millisecond, 500*time.Millisecond)) // the writer's backoff before it resends
				continue
			}
			defer w.mu.Unlock()
			if a.Err != nil {
				w.fails = append(w.fails, fmt.Errorf("%s op %d on %s: %v", w.id, a.Op, doc, a.Err))
				return
			}
			w.acks = append(w.acks, ack{client: w.id, doc: doc, op: a.Op, version: a.Version, dup: a.Dup})
			return
		case <-time.After(60 * time.Second):
			w.mu.Lock()
			w.fails = append(w.fails, fmt.Errorf("%s: no answer on %s within 60s", w.id, doc))
			w.mu.Unlock()
			return
		}
	}
	w.mu.Lock()
	w.fails = append(w.fails, fmt.Errorf("%s: op on %s refused for 60s: %v", w.id, doc, w.refused))
	w.mu.Unlock()
}

// refusals adds up the retryable refusals of all writers.
func refusals(writers []*writer) map[core.Code]int {
	out := map[core.Code]int{}
	for _, w := range writers {
		w.mu.Lock()
		for k, v := range w.refused {
			out[k] += v
		}
		w.mu.Unlock()
	}
	return out
}

// run writes until stop is closed, cycling through docs.
func (w *writer) run(docs []string, stop <-chan struct{}, wg *sync.WaitGroup) {
	defer wg.Done()
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		default:
		}
		w.write(docs[i%len(docs)], i)
	}
}

// verify checks that every writer converged on the stored documents and
// that every acknowledged op is in the log exactly once, at the version its
// ack named. It returns the acknowledged ops and how long convergence took
// (from the call).
func verify(t testing.TB, base string, docs []string, writers []*writer, timeout time.Duration) (int, time.Duration) {
	t.Helper()
	return verifyWithExtra(t, base, docs, writers, nil, timeout)
}

// verifyWithExtra is verify for documents that also received extra[doc]
// acknowledged writes from elsewhere (checked by the caller).
func verifyWithExtra(t testing.TB, base string, docs []string, writers []*writer, extra map[string]int, timeout time.Duration) (int, time.Duration) {
	t.Helper()
	for _, w := range writers {
		w.mu.Lock()
		if len(w.fails) > 0 {
			t.Errorf("%s: %d ops not acknowledged: %v", w.id, len(w.fails), w.fails)
		}
		w.mu.Unlock()
	}
	start := time.Now()
	final := map[string]int64{}
	for _, d := range docs {
		final[d], _ = stored(t, base, d)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for _, w := range writers {
		for _, d := range docs {
			if err := w.docs[d].WaitVersion(ctx, final[d]); err != nil {
				t.Fatalf("%s did not converge: %v", w.id, err)
			}
		}
	}
	took := time.Since(start)
	total := 0
	for _, d := range docs {
		v, data := stored(t, base, d)
		if v != final[d] {
			t.Fatalf("%s moved from %d to %d after the writers stopped", d, final[d], v)
		}
		sum := checksum(data)
		for _, w := range writers {
			if got := checksum(w.docs[d].Data()); got != sum || w.docs[d].Version() != v {
				t.Fatalf("%s: %s has v%d %s, the store v%d %s", d, w.id, w.docs[d].Version(), got, v, sum)
			}
		}
		seen := logged(t, base, d, v)
		ops := 0
		for _, w := range writers {
			w.mu.Lock()
			for _, a := range w.acks {
				if a.doc != d {
					continue
				}
				vs := seen[fmt.Sprintf("%s/%d", a.client, a.op)]
				if len(vs) != 1 || vs[0] != a.version {
					t.Fatalf("%s: op %s/%d acknowledged at v%d (dup %v) is in the log at %v", d, a.client, a.op, a.version, a.dup, vs)
				}
				ops++
			}
			w.mu.Unlock()
		}
		// Every change after the setup write is an acknowledged op, and the
		// counter counts each once.
		if all := ops + extra[d]; int64(all) != v-1 || data["n"] != float64(all) {
			t.Fatalf("%s: %d+%d acknowledged ops, versions 2..%d, n = %v", d, ops, extra[d], v, data["n"])
		}
		total += ops
	}
	for _, w := range writers {
		if len(w.fails) > 0 {
			t.Fatalf("%s: %v", w.id, w.fails)
		}
	}
	return total, took
}

// collection is a collection name of its own for a test. Collection
// indexes are shared by every replica on a store, and a compaction job
// walks the collections its cluster wrote; with names of their own, test
// clusters on one Redis never compact each other's documents.
func collection() string { return "t" + strings.ReplaceAll(uuid.NewString()[:13], "-", "") }

// create writes version 1 of each document.
func create(t testing.TB, base string, docs []string) {
	t.Helper()
	for _, d := range docs {
		if r := mustDo(t, "PUT", base+"/v1/docs/"+d, `{"n":0}`); r.Status != 201 {
			t.Fatalf("create %s: %d %s", d, r.Status, r.Raw)
		}
	}
}

// metricSum adds a metric over the given replicas. A labelled counter
// that has not counted anything yet is not exposed: name those with a
// trailing "?" to read them as 0.
func metricSum(t testing.TB, nodes []*cluster.Node, name string) float64 {
	t.Helper()
	optional := strings.HasSuffix(name, "?")
	name = strings.TrimSuffix(name, "?")
	sum := 0.0
	for _, n := range nodes {
		v, err := n.Metric(name)
		if err != nil && !(optional && strings.Contains(err.Error(), "not exposed")) {
			t.Fatalf("replica %d: %v", n.Index, err)
		}
		sum += v
	}
	return sum
}
