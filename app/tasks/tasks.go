// Package tasks runs background work (webhook deliveries, integration
// events, compaction) on Dapr pub/sub, once per task across the replicas.
//
// Each priority has its own topic on the tasks component (tasks-high,
// tasks-medium, tasks-low), so a backlog of low work in the broker never
// sits in front of high work. daprd delivers every message to one replica
// (the component keeps the default consumer group) as an HTTP POST that this
// package holds open until the task has run: the message is acknowledged
// only after the work is done, so a replica that dies mid-task leaves it to
// be redelivered. Inside the replica a dispatcher hands a fixed number of
// worker slots to the waiting deliveries by weighted priority (8 high : 3
// medium : 1 low when all three wait), so high work is never starved by a
// flood of low work and low work still moves under a flood of high work.
//
// Outcomes are answered with Dapr's status words:
//
//	SUCCESS  the task ran (or had already run: task ids are remembered in the
//	         state store for DedupTTL, so a redelivery is not run again)
//	RETRY    the handler failed; daprd retries with the exponential, jittered
//	         backoff of the tasks component's inbound resiliency policy, and
//	         when those retries are spent publishes the message to the
//	         dead-letter topic (tasks-dead)
//	DROP     the task can never succeed (unknown kind, malformed, or the
//	         handler returned a Permanent error): straight to tasks-dead
//
// Dead letters come back to this package on tasks-dead; they are counted,
// kept in a short in-memory list and handed to the kind's OnDead hook (the
// webhook dead-letter store uses it).
package tasks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/sirupsen/logrus"

	"github.com/open-autoglm/autoglm/app/daprsub"
	"github.com/open-autoglm/autoglm/app/internal/logs"
	"github.com/open-autoglm/autoglm/app/kv"
)

// Priority of a task.
type Priority string

// The three priorities, from the most urgent.
const (
	High   Priority = "high"
	Medium Priority = "medium"
	Low    Priority = "low"
)

// Priorities lists the priorities from the most urgent.
var Priorities = []Priority{High, Medium, Low}

func (p Priority) index() int {
	switch p {
	case High:
		return 0
	case Low:
		return 2
	default:
		return 1
	}
}

// Valid reports whether p is one of the three priorities.
func (p Priority) Valid() bool { return p == High || p == Medium || p == Low }

// Task is one unit of background work. ID identifies it: a task published
// twice with one id runs once.
type Task struct {
	ID       string          `json:"id"`
	Kind     string          `json:"kind"`
	Priority Priority        `json:"priority"`
	Payload  json.RawMessage `json:"payload,omitempty"`
	// Created is when the task was enqueued (Unix ms); stats use it for
	// the time tasks wait.
	Created int64 `json:"created"`
}

// Handler runs a task. A nil error acknowledges it; Permanent errors send it
// to the dead-letter topic at once; other errors are retried.
type Handler func(ctx context.Context, t Task) error

type permanent struct{ err error }

func (p permanent) Error() string { return p.err.Error() }
func (p permanent) Unwrap() error { return p.err }

// Permanent marks err as one that retrying cannot fix.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanent{err}
}

// IsPermanent reports whether err was marked Permanent.
func IsPermanent(err error) bool {
	var p permanent
	return errors.As(err, &p)
}

// Options configure a Queue.
type Options struct {
	Publisher kv.Publisher
	Pubsub    string // the tasks component
	// TopicPrefix names the topics: <prefix>-high, -medium, -low and -dead.
	TopicPrefix string
	// RoutePrefix is where daprd delivers: <prefix>/high, ... /dead.
	RoutePrefix string
	// Done keeps the ids of finished tasks for DedupTTL; nil turns
	// deduplication off.
	Done     kv.Records
	DedupTTL time.Duration
	// Workers is the number of tasks run at once by this replica.
	Workers int
	// Weights are the shares of worker slots given to high, medium and low
	// deliveries while all three wait.
	Weights [3]int
	// Timeout bounds one run of a handler; keep it under the inbound
	// timeout of the component's resiliency policy.
	Timeout time.Duration
	// Buffer is the number of tasks per priority that Submit holds while
	// they are being published.
	Buffer int
	Log    logrus.FieldLogger
	Now    func() time.Time
	// OnRetry, if set, is told of every delivery of a task that had failed
	// before (metrics), with the task's kind.
	OnRetry func(kind string)
}

// Queue publishes tasks and runs the ones daprd delivers to this replica.
type Queue struct {
	opt Options

	mu       sync.RWMutex
	handlers map[string]Handler
	onDead   map[string]func(context.Context, Task)

	disp  *dispatcher
	stats [3]prioStats

	deadMu sync.Mutex
	dead   []DeadTask // most recent last

	failMu   sync.Mutex
	failures map[string]int // task id → failed runs seen by this replica

	out     [3]chan Task
	outMu   sync.RWMutex // Close closes out while no Submit sends
	outWG   sync.WaitGroup
	closed  atomic.Bool
	started atomic.Bool
	stopPub context.CancelFunc
}

type prioStats struct {
	published, publishFailed, dropped       atomic.Int64
	queued, running                         atomic.Int64
	done, failedRuns, retried, deadLettered atomic.Int64
	duplicates                              atomic.Int64

	waitMu  sync.Mutex
	waits   [256]time.Duration
	waitN   int
	waitMax time.Duration
}

// DeadTask is a task that reached the dead-letter topic.
type DeadTask struct {
	Task Task      `json:"task"`
	At   time.Time `json:"at"`
}

// New returns a Queue. Call Start before Submit, and register handlers
// before daprd starts delivering.
func New(opt Options) *Queue {
	if opt.TopicPrefix == "" {
		opt.TopicPrefix = "tasks"
	}
	if opt.RoutePrefix == "" {
		opt.RoutePrefix = "/dapr/tasks"
	}
	if opt.DedupTTL <= 0 {
		opt.DedupTTL = 24 * time.Hour
	}
	if opt.Workers <= 0 {
		opt.Workers = 8
	}
	if opt.Weights == [3]int{} {
		opt.Weights = [3]int{8, 3, 1}
	}
	if opt.Timeout <= 0 {
		opt.Timeout = 50 * time.Second
	}
	if opt.Buffer <= 0 {
		opt.Buffer = 4096
	}
	if opt.Log == nil {
		opt.Log = logs.Discard()
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	q := &Queue{opt: opt, handlers: map[string]Handler{}, onDead: map[string]func(context.Context, Task){},
		disp: newDispatcher(opt.Workers, opt.Weights), failures: map[string]int{}}
	for i := range q.out {
		q.out[i] = make(chan Task, opt.Buffer)
	}
	return q
}

// Register sets the handler of a kind of task.
func (q *Queue) Register(kind string, h Handler) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.handlers[kind] = h
}

// OnDead sets what happens when a task of kind reaches the dead-letter
// topic (after the retries, or at once for a permanent failure).
func (q *Queue) OnDead(kind string, f func(ctx context.Context, t Task)) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.onDead[kind] = f
}

// Topic is the topic of a priority.
func (q *Queue) Topic(p Priority) string { return q.opt.TopicPrefix + "-" + string(p) }

// DeadTopic is the dead-letter topic.
func (q *Queue) DeadTopic() string { return q.opt.TopicPrefix + "-dead" }

// Subscriptions are the entries for GET /dapr/subscribe: one per priority
// with the dead-letter topic, and the dead-letter topic itself.
func (q *Queue) Subscriptions() []daprsub.Subscription {
	subs := make([]daprsub.Subscription, 0, 4)
	for _, p := range Priorities {
		subs = append(subs, daprsub.Subscription{
			PubsubName: q.opt.Pubsub, Topic: q.Topic(p), Route: q.opt.RoutePrefix + "/" + string(p),
			DeadLetterTopic: q.DeadTopic(), Handler: q.deliveryHandler(p),
		})
	}
	subs = append(subs, daprsub.Subscription{
		PubsubName: q.opt.Pubsub, Topic: q.DeadTopic(), Route: q.opt.RoutePrefix + "/dead",
		Handler: http.HandlerFunc(q.serveDead),
	})
	return subs
}

// prepare fills a task's defaults.
func (q *Queue) prepare(t *Task) error {
	if t.Kind == "" {
		return errors.New("tasks: a task needs a kind")
	}
	if t.Priority == "" {
		t.Priority = Medium
	}
	if !t.Priority.Valid() {
		return fmt.Errorf("tasks: unknown priority %q", t.Priority)
	}
	if t.ID == "" {
		t.ID = uuid.NewString()
	}
	if t.Created == 0 {
		t.Created = q.opt.Now().UnixMilli()
	}
	return nil
}

// Enqueue publishes a task and returns it with its id. Do not call it from
// a task handler on a component that delivers one message per topic at a
// time (pubsub.in-memory): the publish would wait for the handler. Use
// Submit there.
func (q *Queue) Enqueue(ctx context.Context, t Task) (Task, error) {
	if err := q.prepare(&t); err != nil {
		return t, err
	}
	return t, q.publish(ctx, t)
}

func (q *Queue) publish(ctx context.Context, t Task) error {
	body, err := json.Marshal(t)
	if err != nil {
		return err
	}
	st := &q.stats[t.Priority.index()]
	err = q.opt.Publisher.Publish(ctx, kv.Message{Pubsub: q.opt.Pubsub, Topic: q.Topic(t.Priority), Body: body,
		ContentType: "application/json",
		Metadata: map[string]string{
			"cloudevent.id":   t.ID,
			"cloudevent.type": "com.autoglm.task." + t.Kind,
		}})
	if err != nil {
		st.publishFailed.Add(1)
		return fmt.Errorf("publish task %s (%s): %w", t.ID, t.Kind, err)
	}
	st.published.Add(1)
	return nil
}

// Submit queues a task for publishing in the background and never blocks:
// when the priority's buffer is full the task is dropped, counted and
// logged. Use it on paths that must not wait for the broker (after a
// commit) and inside task handlers.
func (q *Queue) Submit(t Task) bool {
	if err := q.prepare(&t); err != nil {
		return false
	}
	q.outMu.RLock()
	defer q.outMu.RUnlock()
	if q.closed.Load() {
		return false
	}
	select {
	case q.out[t.Priority.index()] <- t:
		return true
	default:
		q.stats[t.Priority.index()].dropped.Add(1)
		q.opt.Log.WithFields(logrus.Fields{"task": t.ID, "kind": t.Kind, "priority": t.Priority}).
			Warn("task buffer full; task dropped")
		return false
	}
}

// Start runs the background publishers of Submit. Publishing starts once
// ready returns true (the sidecar answers), or at once when ready is nil.
func (q *Queue) Start(ready func() bool) {
	if !q.started.CompareAndSwap(false, true) {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	q.stopPub = cancel
	for i := range q.out {
		// Two publishers per priority: one slow publish (a component that
		// delivers one message at a time) does not hold up the next.
		for range 2 {
			q.outWG.Add(1)
			go q.publisher(ctx, i, ready)
		}
	}
}

func (q *Queue) publisher(ctx context.Context, i int, ready func() bool) {
	defer q.outWG.Done()
	for ready != nil && !ready() {
		select {
		case <-ctx.Done():
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
	for t := range q.out[i] {
		for attempt := 0; ; attempt++ {
			pctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			err := q.publish(pctx, t)
			cancel()
			if err == nil {
				break
			}
			if attempt >= 8 || (ctx.Err() != nil && attempt >= 1) {
				q.stats[i].dropped.Add(1)
				q.opt.Log.WithError(err).WithField("task", t.ID).Error("task not published; dropped")
				break
			}
			d := min(50*time.Millisecond<<attempt, 5*time.Second)
			time.Sleep(d/2 + rand.N(d/2+1))
		}
	}
}

// Close stops Submit and publishes what it still holds, until ctx ends.
func (q *Queue) Close(ctx context.Context) error {
	q.outMu.Lock()
	if !q.closed.CompareAndSwap(false, true) {
		q.outMu.Unlock()
		return nil
	}
	for i := range q.out {
		close(q.out[i])
	}
	q.outMu.Unlock()
	if !q.started.Load() {
		return nil
	}
	done := make(chan struct{})
	go func() { q.outWG.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		q.stopPub()
		return ctx.Err()
	}
}

// cloudEvent is the part of daprd's envelope the queue reads.
type cloudEvent struct {
	ID         string          `json:"id"`
	Data       json.RawMessage `json:"data"`
	DataBase64 []byte          `json:"data_base64"`
}

func decode(r *http.Request) (Task, error) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 4<<20))
	if err != nil {
		return Task{}, err
	}
	var ce cloudEvent
	if err := json.Unmarshal(body, &ce); err != nil {
		return Task{}, fmt.Errorf("envelope: %w", err)
	}
	data := []byte(ce.Data)
	if len(ce.DataBase64) > 0 {
		data = ce.DataBase64
	}
	var s string
	if len(data) > 0 && data[0] == '"' && json.Unmarshal(data, &s) == nil {
		data = []byte(s)
	}
	var t Task
	if err := json.Unmarshal(data, &t); err != nil {
		return Task{}, fmt.Errorf("task: %w", err)
	}
	if t.ID == "" || t.Kind == "" {
		return Task{}, errors.New("task without id or kind")
	}
	if !t.Priority.Valid() {
		t.Priority = Medium
	}
	return t, nil
}

func answer(w http.ResponseWriter, status string) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = fmt.Fprintf(w, `{"status":%q}`, status)
}

func doneKey(id string) string { return "_tasks:done:" + id }

func (q *Queue) deliveryHandler(p Priority) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t, err := decode(r)
		if err != nil {
			q.opt.Log.WithError(err).WithField("priority", p).Warn("malformed task dropped")
			answer(w, "DROP")
			return
		}
		answer(w, q.run(r.Context(), t))
	})
}

// run executes one delivery and returns the status for daprd.
func (q *Queue) run(ctx context.Context, t Task) string {
	st := &q.stats[t.Priority.index()]
	q.mu.RLock()
	h := q.handlers[t.Kind]
	q.mu.RUnlock()
	log := q.opt.Log.WithFields(logrus.Fields{"task": t.ID, "kind": t.Kind, "priority": t.Priority})
	if h == nil {
		log.Warn("no handler for this kind of task; dead-lettered")
		return "DROP"
	}
	if q.finished(ctx, t.ID) {
		st.duplicates.Add(1)
		return "SUCCESS"
	}
	st.queued.Add(1)
	err := q.disp.acquire(ctx, t.Priority.index())
	st.queued.Add(-1)
	if err != nil {
		// daprd gave up on the delivery (its timeout or shutdown): it
		// decides about the retry.
		return "RETRY"
	}
	if q.failedBefore(t.ID) {
		st.retried.Add(1)
		if q.opt.OnRetry != nil {
			q.opt.OnRetry(t.Kind)
		}
	}
	st.running.Add(1)
	st.observeWait(q.opt.Now().Sub(time.UnixMilli(t.Created)))
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), q.opt.Timeout)
	err = safeRun(rctx, h, t)
	cancel()
	st.running.Add(-1)
	q.disp.release()
	switch {
	case err == nil:
		st.done.Add(1)
		q.forget(t.ID)
		q.markFinished(ctx, t.ID)
		return "SUCCESS"
	case IsPermanent(err):
		st.failedRuns.Add(1)
		q.forget(t.ID)
		log.WithError(err).Warn("task failed permanently; dead-lettered")
		return "DROP"
	default:
		st.failedRuns.Add(1)
		q.failed(t.ID)
		log.WithError(err).Info("task failed; daprd retries it")
		return "RETRY"
	}
}

func safeRun(ctx context.Context, h Handler, t Task) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("task handler panic: %v", v)
		}
	}()
	return h(ctx, t)
}

// failed counts a failed run of a task in this replica (bounded memory: the
// table is reset when it grows large).
func (q *Queue) failed(id string) {
	q.failMu.Lock()
	defer q.failMu.Unlock()
	if len(q.failures) > 10000 {
		clear(q.failures)
	}
	q.failures[id]++
}

func (q *Queue) failedBefore(id string) bool {
	q.failMu.Lock()
	defer q.failMu.Unlock()
	return q.failures[id] > 0
}

func (q *Queue) forget(id string) {
	q.failMu.Lock()
	delete(q.failures, id)
	q.failMu.Unlock()
}

func (q *Queue) finished(ctx context.Context, id string) bool {
	if q.opt.Done == nil {
		return false
	}
	item, err := q.opt.Done.Get(ctx, doneKey(id))
	return err == nil && item.Exists()
}

func (q *Queue) markFinished(ctx context.Context, id string) {
	if q.opt.Done == nil {
		return
	}
	err := q.opt.Done.Set(context.WithoutCancel(ctx), doneKey(id), []byte("1"), q.opt.DedupTTL)
	if err != nil {
		// The task ran; a redelivery would run it again, which handlers
		// must tolerate anyway.
		q.opt.Log.WithError(err).WithField("task", id).Warn("task dedup record not written")
	}
}

func (q *Queue) serveDead(w http.ResponseWriter, r *http.Request) {
	t, err := decode(r)
	if err != nil {
		q.opt.Log.WithError(err).Warn("malformed dead letter ignored")
		answer(w, "SUCCESS")
		return
	}
	q.stats[t.Priority.index()].deadLettered.Add(1)
	q.forget(t.ID)
	q.deadMu.Lock()
	q.dead = append(q.dead, DeadTask{Task: t, At: q.opt.Now().UTC()})
	if len(q.dead) > 100 {
		q.dead = q.dead[len(q.dead)-100:]
	}
	q.deadMu.Unlock()
	q.opt.Log.WithFields(logrus.Fields{"task": t.ID, "kind": t.Kind, "priority": t.Priority}).Warn("task dead-lettered")
	q.mu.RLock()
	f := q.onDead[t.Kind]
	q.mu.RUnlock()
	if f != nil {
		f(r.Context(), t)
	}
	answer(w, "SUCCESS")
}

func (s *prioStats) observeWait(d time.Duration) {
	s.waitMu.Lock()
	defer s.waitMu.Unlock()
	s.waits[s.waitN%len(s.waits)] = d
	s.waitN++
	s.waitMax = max(s.waitMax, d)
}

// PriorityStats are one priority's counters in this replica.
type PriorityStats struct {
	Published     int64 `json:"published"`      // tasks this replica published
	PublishFailed int64 `json:"publish_failed"` // publish attempts that failed
	Dropped       int64 `json:"dropped"`        // Submit buffer full or publish given up
	Queued        int64 `json:"queued"`         // deliveries waiting for a worker
	Running       int64 `json:"running"`
	Done          int64 `json:"done"`
	Failed        int64 `json:"failed"`        // handler runs that failed
	Retried       int64 `json:"retried"`       // deliveries of a task that had failed before
	DeadLettered  int64 `json:"dead_lettered"` // tasks received on the dead-letter topic
	Duplicates    int64 `json:"duplicates"`    // deliveries of tasks that had already run
	Buffered      int   `json:"buffered"`      // submitted, not yet published
	// WaitAvgMS / WaitMaxMS: time from enqueue to start over the last 256
	// runs (avg) and since start (max).
	WaitAvgMS float64 `json:"wait_avg_ms"`
	WaitMaxMS float64 `json:"wait_max_ms"`
}

// Stats of this replica.
type Stats struct {
	Workers    int                        `json:"workers"`
	Priorities map[Priority]PriorityStats `json:"priorities"`
	RecentDead []DeadTask                 `json:"recent_dead,omitempty"`
}

// Stats returns this replica's counters.
func (q *Queue) Stats() Stats {
	out := Stats{Workers: q.opt.Workers, Priorities: map[Priority]PriorityStats{}}
	for _, p := range Priorities {
		s := &q.stats[p.index()]
		ps := PriorityStats{
			Published: s.published.Load(), PublishFailed: s.publishFailed.Load(), Dropped: s.dropped.Load(),
			Queued: s.queued.Load(), Running: s.running.Load(), Done: s.done.Load(), Failed: s.failedRuns.Load(),
			Retried: s.retried.Load(), DeadLettered: s.deadLettered.Load(), Duplicates: s.duplicates.Load(),
			Buffered: len(q.out[p.index()]),
		}
		s.waitMu.Lock()
		n := min(s.waitN, len(s.waits))
		var sum time.Duration
		for _, d := range s.waits[:n] {
			sum += d
		}
		if n > 0 {
			ps.WaitAvgMS = float64(sum) / float64(n) / 1e6
		}
		ps.WaitMaxMS = float64(s.waitMax) / 1e6
		s.waitMu.Unlock()
		out.Priorities[p] = ps
	}
	q.deadMu.Lock()
	out.RecentDead = append([]DeadTask(nil), q.dead...)
	q.deadMu.Unlock()
	return out
}
