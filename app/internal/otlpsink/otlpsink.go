// Package otlpsink is an OTLP trace receiver for tests and the benchmark:
// a real gRPC server implementing the collector's TraceService, which
// keeps every span it is sent (from the app's exporter and daprd's) so a
// test can find one trace and check its parent/child links, and render it
// as a tree.
package otlpsink

import (
	"context"
	"encoding/hex"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
)

// Span is one received span, flattened with its resource.
type Span struct {
	Service  string // resource service.name
	Instance string // resource service.instance.id (the app's node id; empty for daprd)
	Name     string
	Kind     tracepb.Span_SpanKind
	TraceID  string
	SpanID   string
	Parent   string // empty for a root
	Start    time.Time
	End      time.Time
	Attrs    map[string]string
	Links    []string // span ids
	Error    bool
}

// Sink receives spans over OTLP/gRPC.
type Sink struct {
	coltracepb.UnimplementedTraceServiceServer
	srv *grpc.Server
	ln  net.Listener

	mu      sync.Mutex
	spans   []Span
	changed chan struct{} // closed and replaced on every export
	// Discard keeps only counts (for load: the benchmark).
	discard bool
	count   int
}

// Start listens on a free loopback port. With discard, spans are only
// counted (the benchmark's sink).
func Start(discard bool) (*Sink, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &Sink{srv: grpc.NewServer(), ln: ln, changed: make(chan struct{}), discard: discard}
	coltracepb.RegisterTraceServiceServer(s.srv, s)
	go func() { _ = s.srv.Serve(ln) }()
	return s, nil
}

// Endpoint is the value for OTEL_EXPORTER_OTLP_ENDPOINT (with
// OTEL_EXPORTER_OTLP_PROTOCOL=grpc).
func (s *Sink) Endpoint() string { return "http://" + s.ln.Addr().String() }

// Stop stops the server.
func (s *Sink) Stop() { s.srv.Stop() }

// Export implements the OTLP TraceService.
func (s *Sink) Export(_ context.Context, req *coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error) {
	var got []Span
	n := 0
	for _, rs := range req.GetResourceSpans() {
		res := attrs(rs.GetResource().GetAttributes())
		for _, ss := range rs.GetScopeSpans() {
			for _, sp := range ss.GetSpans() {
				n++
				if s.discard {
					continue
				}
				links := make([]string, 0, len(sp.GetLinks()))
				for _, l := range sp.GetLinks() {
					links = append(links, hex.EncodeToString(l.GetSpanId()))
				}
				got = append(got, Span{
					Service: res["service.name"], Instance: res["service.instance.id"],
					Name: sp.GetName(), Kind: sp.GetKind(),
					TraceID: hex.EncodeToString(sp.GetTraceId()), SpanID: hex.EncodeToString(sp.GetSpanId()),
					Parent: hex.EncodeToString(sp.GetParentSpanId()),
					Start:  time.Unix(0, int64(sp.GetStartTimeUnixNano())), End: time.Unix(0, int64(sp.GetEndTimeUnixNano())),
					Attrs: attrs(sp.GetAttributes()), Links: links,
					Error: sp.GetStatus().GetCode() == tracepb.Status_STATUS_CODE_ERROR,
				})
			}
		}
	}
	s.mu.Lock()
	s.spans = append(s.spans, got...)
	s.count += n
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
	return &coltracepb.ExportTraceServiceResponse{}, nil
}

func attrs(kvs []*commonpb.KeyValue) map[string]string {
	m := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		v := kv.GetValue()
		switch x := v.GetValue().(type) {
		case *commonpb.AnyValue_StringValue:
			m[kv.GetKey()] = x.StringValue
		case *commonpb.AnyValue_IntValue:
			m[kv.GetKey()] = fmt.Sprint(x.IntValue)
		case *commonpb.AnyValue_DoubleValue:
			m[kv.GetKey()] = fmt.Sprint(x.DoubleValue)
		case *commonpb.AnyValue_BoolValue:
			m[kv.GetKey()] = fmt.Sprint(x.BoolValue)
		default:
			m[kv.GetKey()] = v.String()
		}
	}
	return m
}

// Count is the number of spans received.
func (s *Sink) Count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.count
}

// Spans returns the spans of one trace (all spans for "").
func (s *Sink) Spans(traceID string) []Span {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Span
	for _, sp := range s.spans {
		if traceID == "" || sp.TraceID == traceID {
			out = append(out, sp)
		}
	}
	return out
}

// Wait returns the spans of a trace once done accepts them, or the last
// ones seen and false when ctx ends first.
func (s *Sink) Wait(ctx context.Context, traceID string, done func([]Span) bool) ([]Span, bool) {
	for {
		s.mu.Lock()
		changed := s.changed
		s.mu.Unlock()
		spans := s.Spans(traceID)
		if done(spans) {
			return spans, true
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return spans, false
		}
	}
}

// Tree renders spans as an indented tree in start order: name, where it
// ran, its duration and the attributes that say what it did.
func Tree(spans []Span) string {
	byID := map[string]bool{}
	children := map[string][]Span{}
	for _, s := range spans {
		byID[s.SpanID] = true
	}
	var roots []Span
	for _, s := range spans {
		if s.Parent == "" || !byID[s.Parent] {
			roots = append(roots, s)
		} else {
			children[s.Parent] = append(children[s.Parent], s)
		}
	}
	var b strings.Builder
	var walk func(s Span, prefix string, last, root bool)
	walk = func(s Span, prefix string, last, root bool) {
		branch, next := "├─ ", "│  "
		if last {
			branch, next = "└─ ", "   "
		}
		if root {
			branch, next = "", ""
		}
		where := s.Service
		if s.Instance != "" {
			where += "@" + s.Instance
		}
		fmt.Fprintf(&b, "%s%s%s  [%s] %s%s\n", prefix, branch, s.Name, where,
			s.End.Sub(s.Start).Round(10*time.Microsecond), describe(s))
		kids := children[s.SpanID]
		slices.SortFunc(kids, func(a, b Span) int { return a.Start.Compare(b.Start) })
		for i, k := range kids {
			walk(k, prefix+next, i == len(kids)-1, false)
		}
	}
	slices.SortFunc(roots, func(a, b Span) int { return a.Start.Compare(b.Start) })
	for _, r := range roots {
		walk(r, "", true, true)
	}
	return b.String()
}

// shown are the attributes Tree prints.
var shown = []string{"http.route", "http.response.status_code", "rpc.method", "autoglm.doc", "autoglm.batch.size",
	"autoglm.commit.retries", "autoglm.commit.etag_conflicts", "autoglm.changes", "autoglm.from_node",
	"autoglm.sessions", "autoglm.queue_wait_max_ms", "autoglm.version", "messaging.destination.name"}

func describe(s Span) string {
	var parts []string
	for _, k := range shown {
		if v, ok := s.Attrs[k]; ok {
			parts = append(parts, strings.TrimPrefix(k, "autoglm.")+"="+v)
		}
	}
	if s.Error {
		parts = append(parts, "ERROR")
	}
	if len(parts) == 0 {
		return ""
	}
	return " " + strings.Join(parts, " ")
}
