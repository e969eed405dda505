package tracectx_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/open-autoglm/autoglm/app/metrics/tracectx"
)

const sample = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

func TestValid(t *testing.T) {
	for _, tc := range []struct {
		tp   string
		want bool
	}{
		{sample, true},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", true},
		{"", false},
		{"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false},       // unknown version
		{"00-00000000000000000000000000000000-00f067aa0ba902b7-01", false},       // zero trace id
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", false},       // zero parent id
		{"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", false},       // upper case
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", false}, // trailing data
		{"00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01", false},       // separators
	} {
		if got := tracectx.Valid(tc.tp); got != tc.want {
			t.Errorf("Valid(%q) = %v, want %v", tc.tp, got, tc.want)
		}
	}
}

func TestChildKeepsTrace(t *testing.T) {
	c := tracectx.Child(sample)
	if !tracectx.Valid(c) || tracectx.TraceID(c) != tracectx.TraceID(sample) || c == sample {
		t.Fatalf("Child(%q) = %q: want the same trace with a new span", sample, c)
	}
	if n := tracectx.Child("garbage"); !tracectx.Valid(n) {
		t.Fatalf("Child of a malformed header = %q, want a new valid traceparent", n)
	}
}

func TestMiddleware(t *testing.T) {
	var got string
	h := tracectx.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = tracectx.From(r.Context())
	}))
	t.Run("OK", func(t *testing.T) {
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		req.Header.Set(tracectx.Header, sample)
		h.ServeHTTP(httptest.NewRecorder(), req)
		if tracectx.TraceID(got) != tracectx.TraceID(sample) {
			t.Fatalf("context traceparent %q, want trace %s", got, tracectx.TraceID(sample))
		}
	})
	t.Run("Absent", func(t *testing.T) {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/", nil))
		if !tracectx.Valid(got) {
			t.Fatalf("context traceparent %q, want a new trace", got)
		}
	})
}

func TestInject(t *testing.T) {
	h := http.Header{}
	tracectx.Inject(context.Background(), h)
	if h.Get(tracectx.Header) != "" {
		t.Fatal("injected a traceparent without one in the context")
	}
	tracectx.Inject(tracectx.With(context.Background(), sample), h)
	if h.Get(tracectx.Header) != sample {
		t.Fatalf("header %q, want %q", h.Get(tracectx.Header), sample)
	}
}
