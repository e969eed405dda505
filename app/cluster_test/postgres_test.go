package cluster_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/open-autoglm/autoglm/app/internal/cluster"
	"github.com/open-autoglm/autoglm/app/internal/cluster/backend"
)

// TestPostgresRestart: PostgreSQL restarts while clients write through two
// replicas. Writes during the restart are refused as unavailable (503, never
// a 500) and succeed when retried with the same op id; afterwards every
// acknowledged write is stored exactly once.
func TestPostgresRestart(t *testing.T) {
	release, err := backend.Exclusive(5 * time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	c := cluster.Start(t, cluster.Options{Profile: "postgres", Replicas: 2,
		Env: []string{"AUTOGLM_ANTI_ENTROPY=1s", "AUTOGLM_LOG_WINDOW=100000"}})
	l := startLoad(t, c, 10, 2)

	// REST writers retry a refused write with the same X-Op-ID, which the
	// document's client marks make idempotent.
	type restAck struct {
		client string
		op     int
		v      int64
	}
	var (
		mu       sync.Mutex
		acks     []restAck
		refused  = map[string]int{}
		outage   = map[string][2]time.Time{} // first refusal, first success after it
		restStop = make(chan struct{})
		restWG   sync.WaitGroup
	)
	for i := range 4 {
		restWG.Add(1)
		go func() {
			defer restWG.Done()
			id := fmt.Sprintf("rest%d", i)
			n := c.Nodes[i%2]
			doc := l.docs[i%2]
			for op := 1; ; op++ {
				select {
				case <-restStop:
					return
				default:
				}
				for deadline := time.Now().Add(60 * time.Second); ; {
					r, err := do("PATCH", n.URL()+"/v1/docs/"+doc, `{"ops":[{"op":"inc","path":"n","value":1}]}`,
						"X-Client-ID", id, "X-Op-ID", strconv.Itoa(op))
					mu.Lock()
					if err == nil && r.Status == 200 {
						acks = append(acks, restAck{client: id, op: op, v: int64(r.Body["version"].(float64))})
						if o, ok := outage[id]; ok && o[1].IsZero() {
							outage[id] = [2]time.Time{o[0], time.Now()}
						}
						mu.Unlock()
						break
					}
					code := fmt.Sprintf("%d %s", r.Status, errCode(r))
					if err != nil {
						code = err.Error()
					}
					refused[code]++
					if _, ok := outage[id]; !ok {
						outage[id] = [2]time.Time{time.Now(), {}}
					}
					mu.Unlock()
					if time.Now().After(deadline) {
						t.Errorf("%s op %d: refused for 60s (%s)", id, op, code)
						return
					}
					time.Sleep(100 * time.Millisecond) // the writer's backoff while the store is down
				}
			}
		}()
	}

	time.Sleep(time.Second) // the writers run a while before the restart
	start := time.Now()
	out, err := exec.Command("pg_ctlcluster", "--skip-systemctl-redirect", pgVersion(t), "main", "restart").CombinedOutput()
	if err != nil {
		t.Fatalf("restart PostgreSQL: %v\n%s", err, out)
	}
	restarted := time.Since(start)
	time.Sleep(3 * time.Second) // and on after it: recovery is measured under load
	close(restStop)
	restWG.Wait()
	l.end()

	ops, took := 0, time.Duration(0)
	// The REST writes count in n and in the log too: check them first, then
	// let verify count the clients' ops on top.
	mu.Lock()
	defer mu.Unlock()
	perDoc := map[string]int{}
	for i, d := range l.docs {
		v, _ := stored(t, c.Nodes[1].URL(), d)
		seen := logged(t, c.Nodes[1].URL(), d, v)
		for _, a := range acks {
			if a.client != fmt.Sprintf("rest%d", i) && a.client != fmt.Sprintf("rest%d", i+2) {
				continue
			}
			vs := seen[fmt.Sprintf("%s/%d", a.client, a.op)]
			if len(vs) != 1 || vs[0] != a.v {
				t.Fatalf("%s: REST write %s/%d acknowledged at v%d is in the log at %v", d, a.client, a.op, a.v, vs)
			}
			perDoc[d]++
		}
	}
	for code := range refused {
		if code != "503 unavailable" {
			t.Errorf("writes during the restart were refused with %q (%d times); want only 503 unavailable", code, refused[code])
		}
	}
	ops, took = verifyWithExtra(t, c.Nodes[0].URL(), l.docs, l.writers, perDoc, 30*time.Second)
	var outages []time.Duration
	for _, o := range outage {
		if !o[1].IsZero() {
			outages = append(outages, o[1].Sub(o[0]))
		}
	}
	sort.Slice(outages, func(i, j int) bool { return outages[i] < outages[j] })
	t.Logf("PostgreSQL restarted in %v under load; %d WebSocket ops and %d REST writes acknowledged, all stored once; refusals while it restarted: REST %v, WebSocket %v; REST writers' outage (first refusal to first success): %v; clients converged %v after the writers stopped",
		restarted.Round(time.Millisecond), ops, len(acks), refused, refusals(l.writers), roundAll(outages), took.Round(time.Millisecond))
}

func roundAll(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(10 * time.Millisecond)
	}
	return out
}

func pgVersion(t testing.TB) string {
	t.Helper()
	if v := os.Getenv("PG_VERSION"); v != "" {
		return v
	}
	m, _ := filepath.Glob("/etc/postgresql/*/main")
	if len(m) != 1 {
		t.Fatalf("PostgreSQL cluster not found under /etc/postgresql (set PG_VERSION): %v", m)
	}
	return filepath.Base(filepath.Dir(m[0]))
}
