package daprbus_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/open-autoglm/autoglm/app/daprbus"
)

// Subscriptions may name a dead-letter topic and their own handler; the
// handler never appears in GET /dapr/subscribe, and deliveries to its route
// reach it.
func TestSubscriptionHandlers(t *testing.T) {
	var got string
	h := &daprbus.Handler{Token: "tok", Subs: []daprbus.Subscription{
		{PubsubName: "broadcast", Topic: "changes", Route: "/dapr/events/changes"},
		{PubsubName: "tasks", Topic: "tasks-high", Route: "/dapr/tasks/high", DeadLetterTopic: "tasks-dead",
			Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got = r.URL.Path })},
	}}
	req := httptest.NewRequest("GET", "/dapr/subscribe", nil)
	req.Header.Set("dapr-api-token", "tok")
	w := httptest.NewRecorder()
	h.ServeSubscribe(w, req)
	body := w.Body.String()
	if !strings.Contains(body, `"deadLetterTopic":"tasks-dead"`) || strings.Count(body, "deadLetterTopic") != 1 ||
		strings.Contains(body, "Handler") {
		t.Fatalf("subscribe answer %s", body)
	}
	req = httptest.NewRequest("POST", "/dapr/tasks/high", strings.NewReader(`{}`))
	h.ServeEvent(httptest.NewRecorder(), req)
	if got != "" {
		t.Fatal("a delivery without the app token reached the handler")
	}
	req.Header.Set("dapr-api-token", "tok")
	h.ServeEvent(httptest.NewRecorder(), req)
	if got != "/dapr/tasks/high" {
		t.Fatalf("handler got %q", got)
	}
}
