package metrics

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/felixge/httpsnoop"
)

// statusClasses are the values of the code label of the HTTP metrics.
var statusClasses = []string{"1xx", "2xx", "3xx", "4xx", "5xx"}

// HTTP counts the requests mux serves by route (the ServeMux pattern each
// matched) and status class, with their latency. routes are the patterns
// registered on mux: each is exported from the start. Wrap the mux itself,
// so the pattern it sets on the request is seen.
func (m *Metrics) HTTP(mux http.Handler, routes []string) http.Handler {
	if m == nil {
		return mux
	}
	for _, r := range routes {
		for _, c := range statusClasses {
			m.httpRequests.WithLabelValues(r, c)
		}
		m.httpDuration.WithLabelValues(r)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// httpsnoop keeps Hijacker and Flusher, which WebSocket and SSE need.
		st := httpsnoop.CaptureMetrics(mux, w, r)
		route := r.Pattern
		if route == "" {
			route = "unmatched"
		}
		m.httpRequests.WithLabelValues(route, statusClass(st.Code)).Inc()
		if st.Code != http.StatusSwitchingProtocols && !strings.HasPrefix(w.Header().Get("Content-Type"), "text/event-stream") {
			m.httpDuration.WithLabelValues(route).Observe(st.Duration.Seconds())
		}
	})
}

func statusClass(code int) string {
	if code < 100 || code > 599 {
		return strconv.Itoa(code)
	}
	return statusClasses[code/100-1]
}
