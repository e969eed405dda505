// Package metrics is the service's Prometheus instrumentation: one registry
// with the sync metrics (connections, subscriptions, ops accepted and
// rejected, ETag conflicts, write batch sizes, propagation latency, gap
// repairs, resyncs, queue depths, broadcast publish failures, task retries,
// op-to-ack and commit latency, HTTP requests by route and status, build
// info) plus the Go runtime and process collectors, served at /metrics.
// Every counter is exported from the start, at zero, for each label value
// known then (codes, transports, routes), so rates and alerts work before
// the first event.
//
// The domain packages know nothing of Prometheus: they expose plain func
// hooks (engine.Metrics, session.Options, hub.Options, httpapi.Metrics) and
// this package fills them in.
package metrics

import (
	"net/http"
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/engine"
	"github.com/open-autoglm/autoglm/app/session"
)

// Namespace prefixes every metric of the service.
const Namespace = "autoglm"

// Metrics holds the service's collectors. Its methods are safe for
// concurrent use; a nil *Metrics ignores every call.
type Metrics struct {
	reg *prometheus.Registry
	now func() time.Time

	connections     *prometheus.GaugeVec
	opsAccepted     prometheus.Counter
	opsRejected     *prometheus.CounterVec
	conflicts       prometheus.Counter
	batchSize       prometheus.Histogram
	propagation     prometheus.Histogram
	gapsRepaired    prometheus.Counter
	resyncs         prometheus.Counter
	dropped         prometheus.Counter
	sessionQueue    prometheus.Histogram
	publishFailures *prometheus.CounterVec
	taskRetries     *prometheus.CounterVec
	opAck           *prometheus.HistogramVec
	commit          prometheus.Histogram
	httpRequests    *prometheus.CounterVec
	httpDuration    *prometheus.HistogramVec
}

// latencyBuckets are the buckets of the latency histograms (seconds).
var latencyBuckets = []float64{.0005, .001, .002, .005, .01, .02, .05, .1, .25, .5, 1, 2.5, 5, 10}

// New returns Metrics on a fresh registry. now is the clock propagation
// latency is measured with (time.Now when nil).
func New(now func() time.Time) *Metrics {
	if now == nil {
		now = time.Now
	}
	reg := prometheus.NewRegistry()
	m := &Metrics{reg: reg, now: now}
	f := promauto.With(reg)
	m.connections = f.NewGaugeVec(prometheus.GaugeOpts{Namespace: Namespace, Name: "connections",
		Help: "Open client connections by transport (ws, sse, longpoll)."}, []string{"transport"})
	m.opsAccepted = f.NewCounter(prometheus.CounterOpts{Namespace: Namespace, Name: "ops_accepted_total",
		Help: "Ops durably stored (each got a version)."})
	m.opsRejected = f.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "ops_rejected_total",
		Help: "Ops rejected, by error code."}, []string{"code"})
	m.conflicts = f.NewCounter(prometheus.CounterOpts{Namespace: Namespace, Name: "etag_conflicts_total",
		Help: "Write batches that lost an ETag race to another replica and were retried."})
	m.batchSize = f.NewHistogram(prometheus.HistogramOpts{Namespace: Namespace, Name: "write_batch_size",
		Help:    "Ops coalesced into one state transaction.",
		Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256}})
	m.propagation = f.NewHistogram(prometheus.HistogramOpts{Namespace: Namespace, Name: "propagation_seconds",
		Help: "Time from a change's HLC stamp (taken when the replica applied it, or the client's own stamp) " +
			"to its delivery to a local session's connection.",
		Buckets: []float64{.0005, .001, .002, .003, .005, .0075, .01, .015, .02, .03, .05, .1, .25, .5, 1, 2.5, 5}})
	m.gapsRepaired = f.NewCounter(prometheus.CounterOpts{Namespace: Namespace, Name: "gaps_repaired_total",
		Help: "Version gaps a session pulled from the op log before delivering (lost or reordered broadcasts)."})
	m.resyncs = f.NewCounter(prometheus.CounterOpts{Namespace: Namespace, Name: "resyncs_total",
		Help: "Session resyncs from the store (queue overflow, or a gap older than the op log)."})
	m.dropped = f.NewCounter(prometheus.CounterOpts{Namespace: Namespace, Name: "hub_dropped_total",
		Help: "Live changes a session's full queue could not take (the session resyncs)."})
	m.sessionQueue = f.NewHistogram(prometheus.HistogramOpts{Namespace: Namespace, Name: "session_queue_depth",
		Help:    "Live changes still queued for a session when it takes the next one.",
		Buckets: []float64{0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024}})
	m.publishFailures = f.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "broadcast_publish_failures_total",
		Help: "Broadcasts that could not be published to the other replicas (they repair from the op log), by kind."}, []string{"kind"})
	m.taskRetries = f.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "task_retries_total",
		Help: "Background task attempts that failed and were scheduled again, by task kind."}, []string{"task"})
	m.opAck = f.NewHistogramVec(prometheus.HistogramOpts{Namespace: Namespace, Name: "op_ack_seconds",
		Help:    "Time from receiving a sync op (WebSocket, SSE, long-poll) to writing its ack or reject, by result.",
		Buckets: latencyBuckets}, []string{"result"})
	m.commit = f.NewHistogram(prometheus.HistogramOpts{Namespace: Namespace, Name: "commit_seconds",
		Help:    "Time a write batch took from its first load to durable, ETag retries included.",
		Buckets: latencyBuckets})
	m.httpRequests = f.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "http_requests_total",
		Help: "HTTP requests served, by route (the pattern matched) and status class (2xx, 4xx, ...)."}, []string{"route", "code"})
	m.httpDuration = f.NewHistogramVec(prometheus.HistogramOpts{Namespace: Namespace, Name: "http_request_duration_seconds",
		Help:    "Time to serve an HTTP request, by route; WebSocket and SSE streams are left out (they last a connection).",
		Buckets: latencyBuckets}, []string{"route"})
	for _, c := range core.Codes {
		m.opsRejected.WithLabelValues(string(c))
	}
	for _, t := range []string{"ws", "sse", "longpoll"} {
		m.connections.WithLabelValues(t)
	}
	for _, k := range []string{"changes", "presence"} {
		m.publishFailures.WithLabelValues(k)
	}
	for _, r := range []string{"ack", "reject"} {
		m.opAck.WithLabelValues(r)
	}
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// BuildInfo exports autoglm_build_info{version, goversion} = 1.
func (m *Metrics) BuildInfo(version string) {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Namespace: Namespace, Name: "build_info",
		Help:        "The running build: always 1, with its version and Go version as labels.",
		ConstLabels: prometheus.Labels{"version": version, "goversion": runtime.Version()}})
	g.Set(1)
	m.reg.MustRegister(g)
}

// TaskKinds exports the retry counter of each background task kind from
// the start.
func (m *Metrics) TaskKinds(kinds ...string) {
	for _, k := range kinds {
		m.taskRetries.WithLabelValues(k)
	}
}

// OpAnswered records the time from an op's receipt to its ack ("ack") or
// reject ("reject").
func (m *Metrics) OpAnswered(result string, d time.Duration) {
	if m != nil {
		m.opAck.WithLabelValues(result).Observe(d.Seconds())
	}
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// Engine returns the engine's hooks.
func (m *Metrics) Engine() engine.Metrics {
	if m == nil {
		return engine.Metrics{}
	}
	return engine.Metrics{
		Accepted:      func(n int) { m.opsAccepted.Add(float64(n)) },
		Rejected:      func(code core.Code) { m.opsRejected.WithLabelValues(string(code)).Inc() },
		Conflicts:     m.conflicts.Inc,
		Batch:         func(n int) { m.batchSize.Observe(float64(n)) },
		PublishFailed: func() { m.PublishFailed("changes") },
		Committed:     func(d time.Duration) { m.commit.Observe(d.Seconds()) },
	}
}

// Session fills in a session's metric hooks.
func (m *Metrics) Session(o *session.Options) {
	if m == nil {
		return
	}
	o.GapRepaired = m.gapsRepaired.Inc
	o.Resynced = m.resyncs.Inc
	o.Delivered = m.Delivered
	o.QueueDepth = func(n int) { m.sessionQueue.Observe(float64(n)) }
}

// Connection counts a connection of transport opening (+1) or closing (-1).
func (m *Metrics) Connection(transport string, delta int) {
	if m == nil {
		return
	}
	m.connections.WithLabelValues(transport).Add(float64(delta))
}

// Delivered records the propagation latency of a change just delivered to
// a session: now minus the wall time of its HLC stamp.
func (m *Metrics) Delivered(c core.Change) {
	if m == nil || c.HLC.Wall == 0 {
		return
	}
	d := m.now().UnixMilli() - c.HLC.Wall
	m.propagation.Observe(float64(max(d, 0)) / 1000)
}

// Dropped counts a change a session's queue could not take.
func (m *Metrics) Dropped() {
	if m != nil {
		m.dropped.Inc()
	}
}

// PublishFailed counts a broadcast (kind "changes" or "presence") that was
// not published.
func (m *Metrics) PublishFailed(kind string) {
	if m != nil {
		m.publishFailures.WithLabelValues(kind).Inc()
	}
}

// TaskRetry counts a background task attempt that failed and will run
// again.
func (m *Metrics) TaskRetry(task string) {
	if m != nil {
		m.taskRetries.WithLabelValues(task).Inc()
	}
}

// WatchSubscriptions exports the number of watched documents and of
// subscriptions, read at scrape time from f.
func (m *Metrics) WatchSubscriptions(f func() (docs, subs int)) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: Namespace, Name: "subscriptions",
		Help: "Document subscriptions of the sessions on this replica."},
		func() float64 { _, s := f(); return float64(s) }))
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: Namespace, Name: "watched_documents",
		Help: "Documents with at least one subscriber on this replica."},
		func() float64 { d, _ := f(); return float64(d) }))
}

// WatchQueue exports the depth of a named queue, read at scrape time from f.
func (m *Metrics) WatchQueue(queue string, f func() int) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: Namespace, Name: "queue_depth",
		Help:        "Items waiting in a queue (engine_writes: ops queued behind in-flight transactions).",
		ConstLabels: prometheus.Labels{"queue": queue}},
		func() float64 { return float64(f()) }))
}
