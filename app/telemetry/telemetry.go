// Package telemetry is the service's OpenTelemetry tracing: a tracer
// provider with the OTLP exporter, configured by the standard OTEL_*
// environment variables, the W3C trace-context propagator, and the
// instrumentation of the HTTP server and of the gRPC connection to daprd.
//
// Tracing is off unless an OTLP endpoint is configured
// (OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT). Off,
// Tracer returns nil and every instrumented package skips its tracing code,
// so an untraced replica pays nothing for it. See docs/observability.md.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"

	"github.com/open-autoglm/autoglm/app/protocol"
)

// Scope is the instrumentation scope of the service's own spans.
const Scope = "github.com/open-autoglm/autoglm"

// Propagator reads and writes W3C trace context (traceparent, tracestate)
// and baggage: on REST requests, WebSocket ops, gRPC calls to daprd and the
// broadcast's CloudEvent.
var Propagator propagation.TextMapPropagator = propagation.NewCompositeTextMapPropagator(
	propagation.TraceContext{}, propagation.Baggage{})

// Options name the replica in its spans' resource.
type Options struct {
	Service  string // service.name unless OTEL_SERVICE_NAME sets it
	Version  string // service.version
	Instance string // service.instance.id (the node id)
	// Getenv reads the configuration (os.Getenv when nil).
	Getenv func(string) string
	// OnError sees export failures (nil: they are dropped).
	OnError func(error)
}

// Telemetry is a replica's tracing. The zero value and nil are "off".
type Telemetry struct {
	tp *sdktrace.TracerProvider
}

// Endpoint returns the OTLP endpoint tracing exports to and the protocol
// ("grpc" or "http/protobuf"), or "" when tracing is off: no endpoint,
// OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none.
func Endpoint(getenv func(string) string) (endpoint, protocol string, err error) {
	if getenv == nil {
		getenv = os.Getenv
	}
	if strings.EqualFold(getenv("OTEL_SDK_DISABLED"), "true") {
		return "", "", nil
	}
	switch exp := getenv("OTEL_TRACES_EXPORTER"); exp {
	case "", "otlp":
	case "none":
		return "", "", nil
	default:
		return "", "", fmt.Errorf("OTEL_TRACES_EXPORTER=%q: only otlp and none are supported", exp)
	}
	endpoint = first(getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"), getenv("OTEL_EXPORTER_OTLP_ENDPOINT"))
	if endpoint == "" {
		return "", "", nil
	}
	protocol = first(getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"), getenv("OTEL_EXPORTER_OTLP_PROTOCOL"), "http/protobuf")
	switch protocol {
	case "grpc", "http/protobuf":
	default:
		return "", "", fmt.Errorf("OTEL_EXPORTER_OTLP_PROTOCOL=%q: use grpc or http/protobuf", protocol)
	}
	return endpoint, protocol, nil
}

func first(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

// New sets up tracing from the environment. With no OTLP endpoint it
// returns an "off" Telemetry and no error.
func New(ctx context.Context, o Options) (*Telemetry, error) {
	endpoint, protocol, err := Endpoint(o.Getenv)
	if err != nil || endpoint == "" {
		return &Telemetry{}, err
	}
	// The exporters read the rest of their configuration (headers,
	// timeout, compression, TLS) from the same OTEL_EXPORTER_OTLP_*
	// variables; the batch processor reads OTEL_BSP_*, the provider
	// OTEL_TRACES_SAMPLER (default: parent-based, always on).
	var exp sdktrace.SpanExporter
	if protocol == "grpc" {
		exp, err = otlptracegrpc.New(ctx)
	} else {
		exp, err = otlptracehttp.New(ctx)
	}
	if err != nil {
		return nil, fmt.Errorf("otlp exporter: %w", err)
	}
	service := first(o.Service, "autoglm")
	res, err := resource.New(ctx,
		resource.WithTelemetrySDK(),
		resource.WithAttributes(
			attribute.String("service.name", service),
			attribute.String("service.version", o.Version),
			attribute.String("service.instance.id", o.Instance)),
		resource.WithFromEnv()) // OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES win
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		return nil, fmt.Errorf("trace resource: %w", err)
	}
	if o.OnError != nil {
		otel.SetErrorHandler(otel.ErrorHandlerFunc(o.OnError))
	}
	return &Telemetry{tp: sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))}, nil
}

// Enabled reports whether spans are recorded and exported.
func (t *Telemetry) Enabled() bool { return t != nil && t.tp != nil }

// Tracer returns the service's tracer, or nil when tracing is off.
func (t *Telemetry) Tracer() trace.Tracer {
	if !t.Enabled() {
		return nil
	}
	return t.tp.Tracer(Scope)
}

// Shutdown exports the spans still buffered and stops the exporter.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	if !t.Enabled() {
		return nil
	}
	return t.tp.Shutdown(ctx)
}

// DialOptions instrument the gRPC connection to daprd: a client span per
// call (state, publish), carrying the trace to daprd in the call's
// traceparent header. None when tracing is off.
func (t *Telemetry) DialOptions() []grpc.DialOption {
	if !t.Enabled() {
		return nil
	}
	return []grpc.DialOption{grpc.WithStatsHandler(otelgrpc.NewClientHandler(
		otelgrpc.WithTracerProvider(t.tp), otelgrpc.WithPropagators(Propagator)))}
}

// HTTP traces the requests next serves (one server span per request, in
// the caller's trace when it sends a traceparent). Long-lived streams
// (WebSocket, SSE) and probes are not traced: their ops are (see Ops).
// Daprd's callbacks are traced as broadcast receipts instead. Off, it
// returns next itself.
func (t *Telemetry) HTTP(next http.Handler) http.Handler {
	if !t.Enabled() {
		return next
	}
	return otelhttp.NewHandler(next, "http",
		otelhttp.WithTracerProvider(t.tp),
		otelhttp.WithPropagators(Propagator),
		otelhttp.WithFilter(traced),
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string {
			return spanName(r)
		}))
}

// traced reports whether a request gets its own span.
func traced(r *http.Request) bool {
	switch {
	case r.Header.Get("Upgrade") != "", // the WebSocket sync endpoint
		r.Method == http.MethodGet && r.URL.Path == protocol.PathEvents, // the SSE stream
		strings.HasPrefix(r.URL.Path, "/dapr/"),
		r.URL.Path == "/metrics", r.URL.Path == "/healthz", r.URL.Path == "/readyz":
		return false
	}
	return true
}

// spanName is "METHOD route" with the route pattern the request matched
// (low cardinality), or just the method before routing.
func spanName(r *http.Request) string {
	route := r.Pattern
	if i := strings.IndexByte(route, ' '); i >= 0 {
		route = route[i+1:]
	}
	if route == "" {
		return r.Method
	}
	return r.Method + " " + route
}

// WithTraceparent returns ctx with the remote span a W3C traceparent
// names as its parent; a malformed tp leaves ctx as it is.
func WithTraceparent(ctx context.Context, tp, tracestate string) context.Context {
	if tp == "" {
		return ctx
	}
	c := propagation.MapCarrier{"traceparent": tp}
	if tracestate != "" {
		c["tracestate"] = tracestate
	}
	return propagation.TraceContext{}.Extract(ctx, c)
}

// WithProvider returns a Telemetry recording to tp (tests and the
// benchmark's in-process runs); New is the way from the environment.
func WithProvider(tp *sdktrace.TracerProvider) *Telemetry { return &Telemetry{tp: tp} }
