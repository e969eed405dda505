package httpapi

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
)

// TestOriginPolicy: an allowed origin gets CORS headers on the client
// script and the fallback transports; a refused one gets a 403 it can read
// (forbidden, details.origin) on every entry point, WebSocket included, and
// the server logs the refusal with the origin.
func TestOriginPolicy(t *testing.T) {
	t.Parallel()
	log, hook := logtest.NewNullLogger()
	s := &Server{Log: log, Version: "test", AllowedOrigins: []string{"https://app.example"}}
	h := s.Handler()
	do := func(method, path, origin string, hdr ...string) *http.Response {
		req := httptest.NewRequest(method, path, nil)
		req.Header.Set("Origin", origin)
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		return w.Result()
	}
	for _, path := range []string{"/v1/client.js", "/v1/client.d.ts"} {
		res := do("GET", path, "https://app.example")
		if res.StatusCode != 200 || res.Header.Get("Access-Control-Allow-Origin") != "https://app.example" {
			t.Fatalf("%s from an allowed origin: %d, CORS %q", path, res.StatusCode, res.Header.Get("Access-Control-Allow-Origin"))
		}
	}
	if res := do("OPTIONS", "/v1/poll", "https://app.example"); res.StatusCode != http.StatusNoContent || res.Header.Get("Access-Control-Allow-Origin") != "https://app.example" {
		t.Fatalf("preflight of an allowed origin: %d", res.StatusCode)
	}
	hello := url.QueryEscape(`{"t":"hello","proto":1}`)
	upgrade := []string{"Connection", "Upgrade", "Upgrade", "websocket", "Sec-WebSocket-Version", "13", "Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="}
	for _, c := range []struct {
		method, path string
		hdr          []string
	}{
		{"GET", "/v1/sync", upgrade},
		{"GET", "/v1/events?hello=" + hello, nil},
		{"POST", "/v1/poll", []string{"Content-Type", "application/json"}},
		{"GET", "/v1/client.js", nil},
	} {
		hook.Reset()
		res := do(c.method, c.path, "https://evil.example", c.hdr...)
		var body errorBody
		_ = json.NewDecoder(res.Body).Decode(&body)
		details, _ := body.Error.Details.(map[string]any)
		if res.StatusCode != http.StatusForbidden || body.Error.Code != "forbidden" || details["origin"] != "https://evil.example" {
			t.Fatalf("%s %s from a refused origin: %d %+v", c.method, c.path, res.StatusCode, body)
		}
		if res.Header.Get("Access-Control-Allow-Origin") != "https://evil.example" {
			t.Fatalf("%s: the refusal is not readable by the page (no CORS header)", c.path)
		}
		e := hook.LastEntry()
		if e == nil || e.Level != logrus.WarnLevel || e.Data["origin"] != "https://evil.example" || !strings.Contains(e.Message, "AUTOGLM_ALLOWED_ORIGINS") {
			t.Fatalf("%s: refusal not logged with its reason: %+v", c.path, e)
		}
	}
}
