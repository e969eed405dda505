package metrics_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/open-autoglm/autoglm/app/client"
	"github.com/open-autoglm/autoglm/app/clock"
	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/internal/clienttest"
	"github.com/open-autoglm/autoglm/app/internal/daprtest"
	"github.com/open-autoglm/autoglm/app/internal/rest"
	"github.com/open-autoglm/autoglm/app/metrics"
	"github.com/open-autoglm/autoglm/app/session"
)

func scrape(t testing.TB, h http.Handler) map[string]*dto.MetricFamily {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	return parse(t, rec.Body)
}

func parse(t testing.TB, r io.Reader) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

// value returns the value of the sample of family name whose labels include
// the given name=value pairs (counter, gauge or histogram count).
func value(t testing.TB, fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	t.Helper()
	f, ok := fams[name]
	if !ok {
		t.Fatalf("metric %s not exported", name)
	}
next:
	for _, m := range f.GetMetric() {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, l := range m.GetLabel() {
				if l.GetName() == labels[i] && l.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue()
		case m.Gauge != nil:
			return m.GetGauge().GetValue()
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount())
		}
	}
	t.Fatalf("metric %s%v has no sample", name, labels)
	return 0
}

func TestHooks(t *testing.T) {
	now := time.UnixMilli(1_000_000)
	m := metrics.New(func() time.Time { return now })
	e := m.Engine()
	e.Accepted(3)
	e.Rejected(core.CodeConflict)
	e.Conflicts()
	e.Batch(4)
	e.PublishFailed()
	var o session.Options
	m.Session(&o)
	o.GapRepaired()
	o.Resynced()
	o.QueueDepth(2)
	o.Delivered(core.Change{Doc: "a/b", Version: 1, HLC: clock.Timestamp{Wall: now.UnixMilli() - 4}})
	o.Delivered(core.Change{Doc: "a/b", Version: 2}) // no stamp: not observed
	m.Connection("ws", 1)
	m.Connection("ws", 1)
	m.Connection("ws", -1)
	m.Dropped()
	m.TaskRetry("webhook")
	m.WatchSubscriptions(func() (int, int) { return 2, 7 })
	m.WatchQueue("engine_writes", func() int { return 5 })

	fams := scrape(t, m.Handler())
	for _, tc := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"autoglm_ops_accepted_total", nil, 3},
		{"autoglm_ops_rejected_total", []string{"code", "conflict"}, 1},
		{"autoglm_etag_conflicts_total", nil, 1},
		{"autoglm_write_batch_size", nil, 1},
		{"autoglm_broadcast_publish_failures_total", []string{"kind", "changes"}, 1},
		{"autoglm_gaps_repaired_total", nil, 1},
		{"autoglm_resyncs_total", nil, 1},
		{"autoglm_session_queue_depth", nil, 1},
		{"autoglm_propagation_seconds", nil, 1},
		{"autoglm_connections", []string{"transport", "ws"}, 1},
		{"autoglm_hub_dropped_total", nil, 1},
		{"autoglm_task_retries_total", []string{"task", "webhook"}, 1},
		{"autoglm_subscriptions", nil, 7},
		{"autoglm_watched_documents", nil, 2},
		{"autoglm_queue_depth", []string{"queue", "engine_writes"}, 5},
	} {
		if got := value(t, fams, tc.name, tc.labels...); got != tc.want {
			t.Errorf("%s%v = %v, want %v", tc.name, tc.labels, got, tc.want)
		}
	}
	h := fams["autoglm_propagation_seconds"].GetMetric()[0].GetHistogram()
	if got := h.GetSampleSum(); got < 0.0039 || got > 0.0041 {
		t.Errorf("propagation sum %v s, want 0.004", got)
	}
	if _, ok := fams["go_goroutines"]; !ok {
		t.Error("Go runtime metrics missing")
	}
}

// Every counter and histogram is exported from the first scrape, at zero,
// for each label value known at start; requests are counted by the route
// pattern they matched and their status class.
func TestZeroFromStart(t *testing.T) {
	m := metrics.New(nil)
	m.BuildInfo("v1.2.3")
	m.TaskKinds("webhook.deliver")
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/docs/{coll}/{id}", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) })
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNotFound) })
	h := m.HTTP(mux, []string{"GET /v1/docs/{coll}/{id}", "/"})

	fams := scrape(t, m.Handler())
	zero := []struct {
		name   string
		labels []string
	}{
		{"autoglm_ops_accepted_total", nil},
		{"autoglm_etag_conflicts_total", nil},
		{"autoglm_connections", []string{"transport", "sse"}},
		{"autoglm_broadcast_publish_failures_total", []string{"kind", "presence"}},
		{"autoglm_task_retries_total", []string{"task", "webhook.deliver"}},
		{"autoglm_op_ack_seconds", []string{"result", "ack"}},
		{"autoglm_op_ack_seconds", []string{"result", "reject"}},
		{"autoglm_commit_seconds", nil},
		{"autoglm_http_requests_total", []string{"route", "GET /v1/docs/{coll}/{id}", "code", "2xx"}},
		{"autoglm_http_requests_total", []string{"route", "/", "code", "4xx"}},
		{"autoglm_http_request_duration_seconds", []string{"route", "/"}},
	}
	for _, c := range core.Codes {
		zero = append(zero, struct {
			name   string
			labels []string
		}{"autoglm_ops_rejected_total", []string{"code", string(c)}})
	}
	for _, z := range zero {
		if got := value(t, fams, z.name, z.labels...); got != 0 {
			t.Errorf("%s%v = %v at start, want 0", z.name, z.labels, got)
		}
	}
	if got := value(t, fams, "autoglm_build_info", "version", "v1.2.3"); got != 1 {
		t.Errorf("build info %v, want 1", got)
	}

	for _, path := range []string{"/v1/docs/a/b", "/v1/docs/a/c", "/nowhere"} {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, path, nil))
	}
	m.OpAnswered("ack", 3*time.Millisecond)
	m.Engine().Committed(2 * time.Millisecond)
	fams = scrape(t, m.Handler())
	for _, tc := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"autoglm_http_requests_total", []string{"route", "GET /v1/docs/{coll}/{id}", "code", "2xx"}, 2},
		{"autoglm_http_requests_total", []string{"route", "/", "code", "4xx"}, 1},
		{"autoglm_http_request_duration_seconds", []string{"route", "GET /v1/docs/{coll}/{id}"}, 2},
		{"autoglm_op_ack_seconds", []string{"result", "ack"}, 1},
		{"autoglm_commit_seconds", nil, 1},
	} {
		if got := value(t, fams, tc.name, tc.labels...); got != tc.want {
			t.Errorf("%s%v = %v, want %v", tc.name, tc.labels, got, tc.want)
		}
	}
}

// TestScrapeAfterTraffic runs a real replica (daprd, local profile), makes
// REST writes and WebSocket traffic, and reads the numbers back from
// /metrics.
func TestScrapeAfterTraffic(t *testing.T) {
	r := daprtest.Start(t, daprtest.Options{Profile: "local"})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	c := clienttest.Dial(t, ctx, r.WSURL(), client.Options{ClientID: "watcher"})
	doc := clienttest.Subscribe(t, ctx, c, "metrics/d1", 0)
	const writes = 5
	for i := 1; i <= writes; i++ {
		body := fmt.Sprintf(`{"ops":[{"op":"set","path":"n","value":%d}]}`, i)
		res := rest.Must(t, http.MethodPatch, r.URL()+"/v1/docs/metrics/d1", body,
			"traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
		if res.Status/100 != 2 {
			t.Fatalf("PATCH %d: status %d %s", i, res.Status, res.Raw)
		}
	}
	// A stale base on a strict precondition is rejected and counted.
	_, _ = rest.Do(http.MethodPut, r.URL()+"/v1/docs/metrics/d1", `{"n":0}`, "If-Match", `"1"`)
	if err := doc.WaitVersion(ctx, writes); err != nil {
		t.Fatal(err)
	}

	res, err := http.Get(r.URL() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %d", res.StatusCode)
	}
	fams := parse(t, res.Body)
	if got := value(t, fams, "autoglm_ops_accepted_total"); got < writes {
		t.Errorf("ops accepted %v, want >= %d", got, writes)
	}
	if got := value(t, fams, "autoglm_ops_rejected_total", "code", "precondition_failed"); got != 1 {
		t.Errorf("precondition_failed rejections %v, want 1", got)
	}
	if got := value(t, fams, "autoglm_write_batch_size"); got < 1 {
		t.Errorf("batch size observations %v, want >= 1", got)
	}
	if got := value(t, fams, "autoglm_connections", "transport", "ws"); got != 1 {
		t.Errorf("ws connections %v, want 1", got)
	}
	if got := value(t, fams, "autoglm_subscriptions"); got != 1 {
		t.Errorf("subscriptions %v, want 1", got)
	}
	if got := value(t, fams, "autoglm_propagation_seconds"); got < writes {
		t.Errorf("propagation observations %v, want >= %d", got, writes)
	}
	if got := value(t, fams, "autoglm_http_requests_total", "route", "/v1/docs/{coll}/{id}", "code", "2xx"); got != writes {
		t.Errorf("document requests answered 2xx: %v, want %d", got, writes)
	}
	if got := value(t, fams, "autoglm_http_requests_total", "route", "/v1/docs/{coll}/{id}", "code", "4xx"); got != 1 {
		t.Errorf("document requests answered 4xx: %v, want 1", got)
	}
	if got := value(t, fams, "autoglm_commit_seconds"); got < writes {
		t.Errorf("commit latency observations %v, want >= %d", got, writes)
	}
	if got := value(t, fams, "autoglm_build_info", "version", "test"); got != 1 {
		t.Errorf("build info %v, want 1", got)
	}
	if got := value(t, fams, "autoglm_queue_depth", "queue", "engine_writes"); got != 0 {
		t.Errorf("engine queue %v after the writes settled, want 0", got)
	}
}
