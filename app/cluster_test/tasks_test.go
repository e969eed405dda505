package cluster_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/open-autoglm/autoglm/app/config"
	"github.com/open-autoglm/autoglm/app/internal/cluster/backend"
	"github.com/open-autoglm/autoglm/app/internal/daprrun"
	"github.com/open-autoglm/autoglm/app/internal/daprtest"
	"github.com/open-autoglm/autoglm/app/internal/testutil"
)

// TestTasksRunOnce: the tasks component hands each message to ONE of the
// replicas (competing consumers), the opposite of the broadcast. Two
// sidecars subscribe their apps to two tasks topics (the task queue has one
// per priority); every published task is delivered exactly once in all.
func TestTasksRunOnce(t *testing.T) {
	for _, profile := range []string{"redis", "postgres"} {
		t.Run(profile, func(t *testing.T) {
			daprtest.Integration(t)
			daprtest.Backends(t, profile)
			topic := "changes-" + uuid.NewString()[:8]
			if err := backend.Prepare(profile, topic); err != nil {
				t.Fatal(err)
			}
			defer backend.Discard(profile, topic)
			taskTopics := []string{topic + "-tasks-high", topic + "-tasks-low"}
			for _, tt := range taskTopics {
				defer backend.Redis(backend.RedisAddr(), "DEL", tt)
			}
			root, err := daprrun.RepoRoot()
			if err != nil {
				t.Fatal(err)
			}

			var mu sync.Mutex
			got := map[int][]int{} // task -> replicas that ran it
			var sidecars []*daprrun.Sidecar
			// Each stub app and its daprd require each other's token, as
			// every deployment does.
			daprTokens := [2]string{daprrun.NewToken(), daprrun.NewToken()}
			for r := range 2 {
				appToken := daprrun.NewToken()
				mux := http.NewServeMux()
				mux.HandleFunc("/dapr/subscribe", func(w http.ResponseWriter, req *http.Request) {
					if req.Header.Get("dapr-api-token") != appToken {
						http.Error(w, "missing or wrong dapr-api-token", http.StatusUnauthorized)
						return
					}
					var subs []map[string]string
					for _, tt := range taskTopics {
						subs = append(subs, map[string]string{"pubsubname": config.DefaultTasksPubsub, "topic": tt, "route": "/task"})
					}
					_ = json.NewEncoder(w).Encode(subs)
				})
				mux.HandleFunc("/task", func(w http.ResponseWriter, req *http.Request) {
					if req.Header.Get("dapr-api-token") != appToken {
						http.Error(w, "missing or wrong dapr-api-token", http.StatusUnauthorized)
						return
					}
					var ev struct {
						Data struct{ I int } `json:"data"`
					}
					if err := json.NewDecoder(req.Body).Decode(&ev); err != nil {
						http.Error(w, err.Error(), 400)
						return
					}
					mu.Lock()
					got[ev.Data.I] = append(got[ev.Data.I], r)
					mu.Unlock()
					_, _ = w.Write([]byte(`{"status":"SUCCESS"}`))
				})
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
				go func() { _ = srv.Serve(ln) }()
				defer srv.Close()
				res := t.TempDir()
				if err := daprrun.Render(filepath.Join(root, "components", profile), res, backend.Vars(profile, t.TempDir(), topic)); err != nil {
					t.Fatal(err)
				}
				var log testutil.Buffer
				sc, err := daprrun.Start(daprrun.Options{AppID: config.DefaultAppID, AppPort: ln.Addr().(*net.TCPAddr).Port,
					ResourcesDir: res, Output: &log, APIToken: daprTokens[r], AppAPIToken: appToken})
				if err != nil {
					t.Fatal(err)
				}
				defer sc.Stop(10 * time.Second)
				ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
				err = sc.WaitHealthy(ctx)
				cancel()
				if err != nil {
					t.Fatalf("%v\n%s", err, log.String())
				}
				sidecars = append(sidecars, sc)
			}
			time.Sleep(500 * time.Millisecond) // for both subscriptions to reach the broker: nothing outside it shows that
			const n = 60
			for i := range n {
				r := mustDo(t, "POST", fmt.Sprintf("%s/v1.0/publish/%s/%s", sidecars[i%2].HTTPURL(), config.DefaultTasksPubsub, taskTopics[i/2%2]), fmt.Sprintf(`{"i":%d}`, i),
					"dapr-api-token", daprTokens[i%2])
				if r.Status/100 != 2 {
					t.Fatalf("publish %d: %d %s", i, r.Status, r.Raw)
				}
			}
			testutil.Eventually(t, 30*time.Second, "every task delivered", func() bool {
				mu.Lock()
				defer mu.Unlock()
				return len(got) == n
			})
			time.Sleep(time.Second) // room for a duplicate to show up
			mu.Lock()
			defer mu.Unlock()
			per := [2]int{}
			for i := range n {
				if len(got[i]) != 1 {
					t.Fatalf("task %d ran on replicas %v; want exactly one", i, got[i])
				}
				per[got[i][0]]++
			}
			t.Logf("%s: %d tasks on 2 topics, each run once: %d on replica 0, %d on replica 1", profile, n, per[0], per[1])
		})
	}
}
