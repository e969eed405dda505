package daprsub_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/open-autoglm/autoglm/app/daprsub"
)

// Subscriptions may name a dead-letter topic and their own handler; the
// handler never appears in GET /dapr/subscribe, deliveries to its route
// reach it, and nothing is served without the app token.
func TestRouter(t *testing.T) {
	var got []string
	handler := func(name string) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got = append(got, name+" "+r.URL.Path) })
	}
	rt := &daprsub.Router{Token: "tok", Subs: []daprsub.Subscription{
		{PubsubName: "broadcast", Topic: "changes", Route: "/dapr/events/changes", Handler: handler("broadcast")},
		{PubsubName: "tasks", Topic: "tasks-high", Route: "/dapr/tasks/high", DeadLetterTopic: "tasks-dead",
			Handler: handler("tasks")},
	}}
	serve := func(method, path, token string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(method, path, strings.NewReader(`{}`))
		if token != "" {
			req.Header.Set("dapr-api-token", token)
		}
		w := httptest.NewRecorder()
		rt.ServeHTTP(w, req)
		return w
	}
	if w := serve("GET", "/dapr/subscribe", ""); w.Code != http.StatusUnauthorized {
		t.Fatalf("subscribe without the token: %d", w.Code)
	}
	w := serve("GET", "/dapr/subscribe", "tok")
	body := w.Body.String()
	if w.Code != 200 || !strings.Contains(body, `"deadLetterTopic":"tasks-dead"`) || strings.Count(body, "deadLetterTopic") != 1 ||
		strings.Contains(body, "Handler") || !strings.Contains(body, `"route":"/dapr/events/changes"`) {
		t.Fatalf("subscribe answer %d %s", w.Code, body)
	}
	for _, tok := range []string{"", "wrong"} {
		if w := serve("POST", "/dapr/tasks/high", tok); w.Code != http.StatusUnauthorized || len(got) != 0 {
			t.Fatalf("a delivery with token %q: %d, reached %v", tok, w.Code, got)
		}
	}
	serve("POST", "/dapr/tasks/high", "tok")
	serve("POST", "/dapr/events/changes", "tok")
	if strings.Join(got, ",") != "tasks /dapr/tasks/high,broadcast /dapr/events/changes" {
		t.Fatalf("handlers got %v", got)
	}
	if w := serve("GET", "/dapr/tasks/high", "tok"); w.Code != http.StatusMethodNotAllowed {
		t.Fatalf("GET of a delivery route: %d", w.Code)
	}
	if w := serve("POST", "/dapr/tasks/nope", "tok"); w.Code != http.StatusNotFound {
		t.Fatalf("unknown route: %d", w.Code)
	}
}
