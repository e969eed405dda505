// Package daprsub is the app side of Dapr's programmatic subscriptions:
// it answers GET /dapr/subscribe with the subscriptions of every consumer
// (the change broadcast, the task queue) and routes daprd's deliveries to
// each subscription's handler. When a token is set (APP_API_TOKEN), every
// call must carry it in the dapr-api-token header.
package daprsub

import (
	"crypto/subtle"
	"encoding/json"
	"net/http"
)

// SubscribePath is where daprd asks for the subscriptions.
const SubscribePath = "/dapr/subscribe"

// Subscription is one entry of the answer to GET /dapr/subscribe, with the
// handler of its deliveries.
type Subscription struct {
	PubsubName string            `json:"pubsubname"`
	Topic      string            `json:"topic"`
	Route      string            `json:"route"`
	Metadata   map[string]string `json:"metadata,omitempty"`
	// DeadLetterTopic receives, from daprd, the messages the app answered
	// DROP or that failed every retry of the component's inbound policy.
	DeadLetterTopic string `json:"deadLetterTopic,omitempty"`
	// Handler serves the POSTs daprd sends to Route.
	Handler http.Handler `json:"-"`
}

// Router serves GET /dapr/subscribe and the subscriptions' routes. Mount it
// under /dapr/.
type Router struct {
	Subs  []Subscription
	Token string
}

// ServeHTTP implements http.Handler.
func (rt *Router) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var h http.Handler
	method := http.MethodPost
	if r.URL.Path == SubscribePath {
		h, method = http.HandlerFunc(rt.serveSubscribe), http.MethodGet
	} else {
		for _, s := range rt.Subs {
			if s.Route == r.URL.Path && s.Handler != nil {
				h = s.Handler
				break
			}
		}
	}
	switch {
	case h == nil:
		http.NotFound(w, r)
	case r.Method != method:
		w.Header().Set("Allow", method)
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	case !rt.authorized(r):
		http.Error(w, "missing or wrong dapr-api-token", http.StatusUnauthorized)
	default:
		h.ServeHTTP(w, r)
	}
}

func (rt *Router) serveSubscribe(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(rt.Subs)
}

func (rt *Router) authorized(r *http.Request) bool {
	if rt.Token == "" {
		return true
	}
	got := r.Header.Get("dapr-api-token")
	return subtle.ConstantTimeCompare([]byte(got), []byte(rt.Token)) == 1
}
