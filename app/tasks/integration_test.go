package tasks_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/open-autoglm/autoglm/app/daprkv"
	"github.com/open-autoglm/autoglm/app/daprsub"
	"github.com/open-autoglm/autoglm/app/inmem"
	"github.com/open-autoglm/autoglm/app/internal/cluster/backend"
	"github.com/open-autoglm/autoglm/app/internal/daprrun"
	"github.com/open-autoglm/autoglm/app/internal/daprtest"
	"github.com/open-autoglm/autoglm/app/internal/testutil"
	"github.com/open-autoglm/autoglm/app/tasks"
)

// app is a small Dapr app serving one Queue beside a real daprd.
type app struct {
	Q       *tasks.Queue
	Sidecar *daprrun.Sidecar
	log     *testutil.Buffer
}

// startApp runs a queue on a profile's tasks component. The topics are
// unique to the test, so tests sharing a broker do not see each other's
// tasks.
func startApp(t *testing.T, profile string, opt tasks.Options, setup func(q *tasks.Queue)) *app {
	t.Helper()
	daprtest.Integration(t)
	if err := backend.Require(profile); err != nil {
		t.Fatal(err)
	}
	root, err := daprrun.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	res := t.TempDir()
	if err := daprrun.Render(filepath.Join(root, "components", profile), res,
		backend.Vars(profile, t.TempDir(), "changes-"+uuid.NewString()[:8])); err != nil {
		t.Fatal(err)
	}
	grpcPort, _ := daprrun.FreePort()
	// The app and its daprd require each other's token, as in every
	// deployment.
	daprToken, appToken := daprrun.NewToken(), daprrun.NewToken()
	state, err := daprkv.Dial(grpcPort, daprToken, "statestore", "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = state.Close() })
	opt.Publisher = state
	opt.Pubsub = "tasks"
	opt.Done = state
	if opt.TopicPrefix == "" {
		opt.TopicPrefix = "tasks-" + uuid.NewString()[:8]
	}
	q := tasks.New(opt)
	setup(q)
	mux := http.NewServeMux()
	mux.Handle("/dapr/", &daprsub.Router{Subs: q.Subscriptions(), Token: appToken})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux}
	go func() { _ = srv.Serve(ln) }()
	a := &app{Q: q, log: &testutil.Buffer{}}
	sc, err := daprrun.Start(daprrun.Options{AppID: "taskstest-" + uuid.NewString()[:8],
		AppPort: ln.Addr().(*net.TCPAddr).Port, GRPCPort: grpcPort, ResourcesDir: res, Output: a.log, LogLevel: "info",
		APIToken: daprToken, AppAPIToken: appToken})
	if err != nil {
		t.Fatal(err)
	}
	a.Sidecar = sc
	t.Cleanup(func() {
		_ = q.Close(context.Background())
		_ = sc.Stop(10 * time.Second)
		_ = srv.Close()
		if t.Failed() {
			t.Logf("daprd log:\n%s", a.log.String())
		}
		if profile == "redis" {
			keys := []string{"DEL"}
			for _, p := range tasks.Priorities {
				keys = append(keys, q.Topic(p))
			}
			keys = append(keys, q.DeadTopic())
			_, _ = backend.Redis(backend.RedisAddr(), keys...)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := sc.WaitHealthy(ctx); err != nil {
		t.Fatalf("%v\n%s", err, a.log.String())
	}
	// daprd subscribes once its app channel is up; give it that moment.
	testutil.Eventually(t, 20*time.Second, "the app subscribed", func() bool { return bytes.Contains(a.log.Bytes(), []byte("app is subscribed")) })
	q.Start(nil)
	return a
}

// startInProcess runs a queue on an in-memory state that delivers its
// subscriptions as daprd does (inmem.State.Subscribe), with the retry
// policy's shape (exponential, 5 retries) on a shorter scale.
func startInProcess(t *testing.T, opt tasks.Options, setup func(q *tasks.Queue)) *app {
	t.Helper()
	st := inmem.NewState()
	st.Redelivery = inmem.Redelivery{Retries: 5, Backoff: 20 * time.Millisecond, MaxBackoff: time.Second}
	opt.Publisher, opt.Done, opt.Pubsub = st, st, "tasks"
	q := tasks.New(opt)
	setup(q)
	stop := st.Subscribe(q.Subscriptions())
	q.Start(nil)
	t.Cleanup(func() {
		_ = q.Close(context.Background())
		stop()
	})
	return &app{Q: q}
}

// TestRetryThenDeadLetter runs tasks that fail, in process and on a real
// daprd (local profile): a failing task is redelivered with the tasks
// component's exponential backoff (components/local/resiliency.yaml: 5
// retries) and then lands on the dead-letter topic; a flaky one succeeds on
// a retry; a permanent failure is dead-lettered at once; a task published
// twice runs once.
func TestRetryThenDeadLetter(t *testing.T) {
	t.Run("InProcess", func(t *testing.T) { retryThenDeadLetter(t, startInProcess) })
	t.Run("Dapr", func(t *testing.T) {
		retryThenDeadLetter(t, func(t *testing.T, opt tasks.Options, setup func(q *tasks.Queue)) *app {
			return startApp(t, "local", opt, setup)
		})
	})
}

func retryThenDeadLetter(t *testing.T, startQueue func(t *testing.T, opt tasks.Options, setup func(q *tasks.Queue)) *app) {
	var (
		mu     sync.Mutex
		runs   = map[string][]time.Time{}
		deadCh = make(chan tasks.Task, 10)
	)
	record := func(id string) int {
		mu.Lock()
		defer mu.Unlock()
		runs[id] = append(runs[id], time.Now())
		return len(runs[id])
	}
	a := startQueue(t, tasks.Options{Workers: 4}, func(q *tasks.Queue) {
		q.Register("always-fails", func(ctx context.Context, tk tasks.Task) error {
			record(tk.ID)
			return fmt.Errorf("the endpoint is down")
		})
		q.Register("flaky", func(ctx context.Context, tk tasks.Task) error {
			if record(tk.ID) < 3 {
				return fmt.Errorf("not yet")
			}
			return nil
		})
		q.Register("invalid", func(ctx context.Context, tk tasks.Task) error {
			record(tk.ID)
			return tasks.Permanent(fmt.Errorf("payload can never work"))
		})
		q.Register("once", func(ctx context.Context, tk tasks.Task) error {
			record(tk.ID)
			return nil
		})
		for _, k := range []string{"always-fails", "flaky", "invalid"} {
			q.OnDead(k, func(ctx context.Context, tk tasks.Task) { deadCh <- tk })
		}
	})
	ctx := context.Background()
	start := time.Now()
	fail, err := a.Q.Enqueue(ctx, tasks.Task{Kind: "always-fails", Priority: tasks.High})
	if err != nil {
		t.Fatal(err)
	}
	flaky, _ := a.Q.Enqueue(ctx, tasks.Task{Kind: "flaky", Priority: tasks.Medium})
	invalid, _ := a.Q.Enqueue(ctx, tasks.Task{Kind: "invalid", Priority: tasks.Low})
	once := tasks.Task{ID: "once-" + uuid.NewString(), Kind: "once", Priority: tasks.Low}
	for range 2 {
		if _, err := a.Q.Enqueue(ctx, once); err != nil {
			t.Fatal(err)
		}
	}

	dead := map[string]time.Duration{}
	for len(dead) < 2 {
		select {
		case tk := <-deadCh:
			dead[tk.ID] = time.Since(start)
		case <-time.After(60 * time.Second):
			t.Fatalf("dead letters after 60s: %v", dead)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if _, ok := dead[invalid.ID]; !ok || len(runs[invalid.ID]) != 1 {
		t.Fatalf("permanent failure: dead %v, runs %d", dead, len(runs[invalid.ID]))
	}
	failRuns := runs[fail.ID]
	if _, ok := dead[fail.ID]; !ok || len(failRuns) != 6 {
		t.Fatalf("failing task: dead %v, %d runs (want 1 + 5 retries)", dead, len(failRuns))
	}
	var gaps []time.Duration
	for i := 1; i < len(failRuns); i++ {
		gaps = append(gaps, failRuns[i].Sub(failRuns[i-1]).Round(time.Millisecond))
	}
	// Exponential: later gaps are longer than the first one (the policy
	// jitters each by up to ±50%, so compare the ends only).
	if gaps[len(gaps)-1] <= gaps[0] {
		t.Fatalf("retry gaps do not grow: %v", gaps)
	}
	t.Logf("failing task: %d runs, gaps between retries %v, dead-lettered after %s", len(failRuns), gaps,
		dead[fail.ID].Round(time.Millisecond))
	if n := len(runs[flaky.ID]); n != 3 {
		t.Fatalf("flaky task ran %d times, want 3", n)
	}
	if _, ok := dead[flaky.ID]; ok {
		t.Fatal("flaky task was dead-lettered")
	}
	if n := len(runs[once.ID]); n != 1 {
		t.Fatalf("task published twice ran %d times", n)
	}
	st := a.Q.Stats()
	high, med, low := st.Priorities[tasks.High], st.Priorities[tasks.Medium], st.Priorities[tasks.Low]
	if high.DeadLettered != 1 || high.Retried != 5 || high.Failed != 6 {
		t.Fatalf("high stats %+v", high)
	}
	if med.Done != 1 || med.Retried != 2 || med.DeadLettered != 0 {
		t.Fatalf("medium stats %+v", med)
	}
	if low.DeadLettered != 1 || low.Done != 1 || low.Duplicates != 1 {
		t.Fatalf("low stats %+v", low)
	}
	if len(st.RecentDead) != 2 {
		t.Fatalf("recent dead %+v", st.RecentDead)
	}
	b, _ := json.Marshal(st)
	t.Logf("stats: %s", b)
}

// TestPriorityUnderFlood puts 10,000 low-priority tasks in front of the
// queue (Redis profile: they wait in the broker's stream and in the
// replica), then publishes high-priority tasks one at a time and measures
// how long each waits from publish to start. The bound is generous for a
// shared 2-core machine; the numbers are logged.
func TestPriorityUnderFlood(t *testing.T) {
	const (
		lowTasks  = 10000
		highTasks = 40
		lowWork   = time.Millisecond
	)
	var (
		lowDone  atomic.Int64
		highWait = make(chan time.Duration, highTasks)
	)
	a := startApp(t, "redis", tasks.Options{Workers: 4}, func(q *tasks.Queue) {
		q.Register("low", func(ctx context.Context, tk tasks.Task) error {
			time.Sleep(lowWork) // the work of a low task
			lowDone.Add(1)
			return nil
		})
		q.Register("high", func(ctx context.Context, tk tasks.Task) error {
			highWait <- time.Since(time.UnixMilli(tk.Created))
			return nil
		})
	})
	ctx := context.Background()
	start := time.Now()
	var wg sync.WaitGroup
	var publishErr atomic.Value
	next := atomic.Int64{}
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= lowTasks {
				if _, err := a.Q.Enqueue(ctx, tasks.Task{Kind: "low", Priority: tasks.Low}); err != nil {
					publishErr.Store(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := publishErr.Load(); err != nil {
		t.Fatal(err)
	}
	published := time.Since(start)
	backlogAtStart := lowTasks - lowDone.Load()

	var waits []time.Duration
	for range highTasks {
		if _, err := a.Q.Enqueue(ctx, tasks.Task{Kind: "high", Priority: tasks.High}); err != nil {
			t.Fatal(err)
		}
		select {
		case d := <-highWait:
			waits = append(waits, d)
		case <-time.After(30 * time.Second):
			t.Fatalf("high task not run within 30s (low done %d)", lowDone.Load())
		}
		time.Sleep(25 * time.Millisecond) // spreads the high tasks over the backlog
	}
	backlogAtEnd := lowTasks - lowDone.Load()
	slices.Sort(waits)
	p50, p99, worst := waits[len(waits)/2], waits[len(waits)*99/100], waits[len(waits)-1]
	t.Logf("published %d low tasks in %s; low backlog %d when the high tasks started, %d when they ended",
		lowTasks, published.Round(time.Millisecond), backlogAtStart, backlogAtEnd)
	t.Logf("high-priority wait from publish to start over %d tasks: p50 %s, p99 %s, max %s",
		len(waits), p50, p99, worst)
	if backlogAtEnd < 1000 {
		t.Fatalf("the low backlog drained (%d left) before the high tasks finished: the test measured nothing", backlogAtEnd)
	}
	if worst > 2*time.Second {
		t.Fatalf("a high-priority task waited %s behind the low flood", worst)
	}
	st := a.Q.Stats()
	t.Logf("stats: low %+v", st.Priorities[tasks.Low])
	t.Logf("stats: high %+v", st.Priorities[tasks.High])
}
