package httpapi

import "net/http"

// router is where routes are registered.
type router interface {
	HandleFunc(pattern string, handler func(http.ResponseWriter, *http.Request))
	Handle(pattern string, handler http.Handler)
}

// routeMux is a ServeMux that remembers its patterns, so the request
// metrics can show every route from the start.
type routeMux struct {
	*http.ServeMux
	patterns []string
}

func newRouteMux() *routeMux { return &routeMux{ServeMux: http.NewServeMux()} }

func (m *routeMux) HandleFunc(pattern string, handler func(http.ResponseWriter, *http.Request)) {
	m.patterns = append(m.patterns, pattern)
	m.ServeMux.HandleFunc(pattern, handler)
}

func (m *routeMux) Handle(pattern string, handler http.Handler) {
	m.patterns = append(m.patterns, pattern)
	m.ServeMux.Handle(pattern, handler)
}

// observe wraps the routes in the request metrics (innermost: they read
// the pattern the mux matched) and then in tracing.
func (s *Server) observe(mux *routeMux) http.Handler {
	var h http.Handler = mux.ServeMux
	if s.Metrics.Requests != nil {
		h = s.Metrics.Requests(h, mux.patterns)
	}
	if s.Metrics.Trace != nil {
		h = s.Metrics.Trace(h)
	}
	return h
}
