// Package tracectx carries W3C trace context (the traceparent header) from
// an incoming request through the service to what it sends on: Dapr
// publishes (as the CloudEvent's traceparent) and outgoing invocations. It
// has no dependencies, so the engine and the adapters can use it freely.
package tracectx

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"strings"
)

// Header is the W3C trace context header.
const Header = "traceparent"

type key struct{}

// With returns ctx carrying traceparent tp.
func With(ctx context.Context, tp string) context.Context {
	if tp == "" {
		return ctx
	}
	return context.WithValue(ctx, key{}, tp)
}

// From returns the traceparent ctx carries, or "".
func From(ctx context.Context) string {
	if ctx == nil {
		return ""
	}
	tp, _ := ctx.Value(key{}).(string)
	return tp
}

// Valid reports whether tp is a well-formed version-00 traceparent:
// 00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>, ids not all zero.
func Valid(tp string) bool {
	if len(tp) != 55 || tp[2] != '-' || tp[35] != '-' || tp[52] != '-' {
		return false
	}
	ver, trace, parent, flags := tp[0:2], tp[3:35], tp[36:52], tp[53:55]
	if ver != "00" || !lowerHex(trace) || !lowerHex(parent) || !lowerHex(flags) {
		return false
	}
	return strings.Trim(trace, "0") != "" && strings.Trim(parent, "0") != ""
}

func lowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// New starts a trace: a fresh trace id and span id, sampled.
func New() string {
	var b [24]byte
	_, _ = rand.Read(b[:])
	return "00-" + hex.EncodeToString(b[:16]) + "-" + hex.EncodeToString(b[16:]) + "-01"
}

// Child returns a traceparent in the same trace as tp with a new span id
// (this service's span); a malformed tp starts a new trace.
func Child(tp string) string {
	if !Valid(tp) {
		return New()
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	return tp[:36] + hex.EncodeToString(b[:]) + tp[52:]
}

// TraceID returns the trace id part of tp, or "".
func TraceID(tp string) string {
	if !Valid(tp) {
		return ""
	}
	return tp[3:35]
}

// Middleware accepts the caller's traceparent (or starts a trace when there
// is none or it is malformed) and puts this service's span into the request
// context, so writes made by the request publish their broadcasts in the
// caller's trace.
func Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tp := Child(r.Header.Get(Header))
		next.ServeHTTP(w, r.WithContext(With(r.Context(), tp)))
	})
}

// Inject sets the traceparent of ctx on an outgoing request's headers (for
// Dapr service invocation over HTTP).
func Inject(ctx context.Context, h http.Header) {
	if tp := From(ctx); tp != "" {
		h.Set(Header, tp)
	}
}
