package webhooks

import (
	"encoding/json"
	"io"
	"net/http"

	"github.com/open-autoglm/autoglm/app/core"
)

// API handlers. Each returns a status and a JSON body, or an error that
// the HTTP layer maps to its status and error body in its one place.

// Create handles POST /v1/webhooks {collection, url, secret?}: 201 with the
// endpoint and its secret (shown only here).
func (s *Service) Create(r *http.Request) (int, any, error) {
	if s.opt.RegistrationClosed != "" {
		return 0, nil, core.Errorf(core.CodeForbidden, "%s", s.opt.RegistrationClosed)
	}
	var in struct {
		Collection string `json:"collection"`
		URL        string `json:"url"`
		Secret     string `json:"secret"`
	}
	dec := json.NewDecoder(io.LimitReader(r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		return 0, nil, core.Errorf(core.CodeBadRequest, "webhook: %v", err)
	}
	e, err := s.Register(r.Context(), Endpoint{Collection: in.Collection, URL: in.URL, Secret: in.Secret})
	if err != nil {
		return 0, nil, err
	}
	return http.StatusCreated, e, nil
}

// List handles GET /v1/webhooks: the endpoints without their secrets, and
// this replica's delivery counters and breaker states.
func (s *Service) List(r *http.Request) (int, any, error) {
	if err := s.Refresh(r.Context()); err != nil {
		return 0, nil, err
	}
	eps := s.Endpoints()
	for i := range eps {
		eps[i].Secret = ""
	}
	return http.StatusOK, map[string]any{"webhooks": eps, "stats": s.Stats()}, nil
}

// Delete handles DELETE /v1/webhooks/{id}.
func (s *Service) Delete(r *http.Request) (int, any, error) {
	if err := s.Remove(r.Context(), r.PathValue("id")); err != nil {
		return 0, nil, err
	}
	return http.StatusOK, map[string]any{"id": r.PathValue("id"), "deleted": true}, nil
}

// Dead handles GET /v1/webhooks/dead.
func (s *Service) Dead(r *http.Request) (int, any, error) {
	letters, err := s.DeadLetters(r.Context())
	if err != nil {
		return 0, nil, err
	}
	if letters == nil {
		letters = []DeadLetter{}
	}
	return http.StatusOK, map[string]any{"dead_letters": letters}, nil
}

// ReplayDead handles POST /v1/webhooks/dead/{id}/replay: 202 with the id
// of the task that sends the versions again.
func (s *Service) ReplayDead(r *http.Request) (int, any, error) {
	task, err := s.Replay(r.Context(), r.PathValue("id"))
	if err != nil {
		return 0, nil, err
	}
	return http.StatusAccepted, map[string]any{"dead_letter": r.PathValue("id"), "task": task}, nil
}
