package webhooks

// The endpoint registry: endpoints from the collections file and those
// registered through the API, kept in one state record.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"slices"

	"github.com/open-autoglm/autoglm/app/core"
)

// State keys.
const registryKey = "_webhooks:registry"

type registry struct {
	Endpoints []Endpoint `json:"endpoints"`
}

// Refresh reloads the API-registered endpoints from the state store.
func (s *Service) Refresh(ctx context.Context) error {
	var reg registry
	if _, err := s.load(ctx, registryKey, &reg); err != nil {
		return err
	}
	all := append(s.configured(), reg.Endpoints...)
	s.endpoints.Store(&all)
	return nil
}

// Endpoints lists the known endpoints (secrets included).
func (s *Service) Endpoints() []Endpoint { return slices.Clone(*s.endpoints.Load()) }

func (s *Service) endpoint(id string) (Endpoint, bool) {
	for _, e := range *s.endpoints.Load() {
		if e.ID == id {
			return e, true
		}
	}
	return Endpoint{}, false
}

// Register adds an endpoint through the API; a missing secret is
// generated. It returns the endpoint with its secret.
func (s *Service) Register(ctx context.Context, e Endpoint) (Endpoint, error) {
	if !core.ValidCollection(e.Collection) {
		return e, core.Errorf(core.CodeInvalidName, "collection name %q: want [a-z][a-z0-9_-]{0,63}", e.Collection)
	}
	if err := s.opt.Targets.CheckURL(ctx, e.URL); err != nil {
		var refused *RefusedError
		switch {
		case errors.As(err, &refused) && refused.Allowable:
			return e, core.Errorf(core.CodeForbidden, "%v; list internal receivers in AUTOGLM_WEBHOOK_ALLOW", err)
		case errors.As(err, &refused):
			return e, core.Errorf(core.CodeForbidden, "%v", err)
		}
		return e, core.Errorf(core.CodeBadRequest, "%v", err)
	}
	if e.Secret == "" {
		var b [24]byte
		_, _ = rand.Read(b[:])
		e.Secret = "whsec_" + hex.EncodeToString(b[:])
	}
	e.ID = "wh_" + newID()
	e.Source = "api"
	e.Created = s.opt.Now().UTC()
	s.regMu.Lock()
	defer s.regMu.Unlock()
	err := update(ctx, s, registryKey, func(r *registry) bool {
		r.Endpoints = append(r.Endpoints, e)
		return true
	})
	if err != nil {
		return e, err
	}
	return e, s.Refresh(ctx)
}

// Remove deletes an API-registered endpoint.
func (s *Service) Remove(ctx context.Context, id string) error {
	if e, ok := s.endpoint(id); ok && e.Source == "config" {
		return core.Errorf(core.CodeConflict, "webhook %q is declared in the collections file; remove it there", id)
	}
	found := false
	s.regMu.Lock()
	defer s.regMu.Unlock()
	err := update(ctx, s, registryKey, func(r *registry) bool {
		n := len(r.Endpoints)
		r.Endpoints = slices.DeleteFunc(r.Endpoints, func(e Endpoint) bool { return e.ID == id })
		found = len(r.Endpoints) != n
		return found
	})
	if err != nil {
		return err
	}
	if !found {
		return core.Errorf(core.CodeNotFound, "no webhook %q", id)
	}
	return s.Refresh(ctx)
}
