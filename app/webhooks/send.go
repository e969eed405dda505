package webhooks

// The delivery request: its body and the POST through the breaker.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/open-autoglm/autoglm/app/core"
)

// Delivery is the JSON body POSTed to an endpoint.
type Delivery struct {
	ID         string          `json:"id"` // <webhook>:<doc>@<version>: the same on every retry
	Type       string          `json:"type"`
	Webhook    string          `json:"webhook"`
	Collection string          `json:"collection"`
	Doc        string          `json:"doc"`
	Version    int64           `json:"version"`
	Prev       int64           `json:"prev_version"`
	Ops        json.RawMessage `json:"ops,omitempty"`
	Author     string          `json:"by,omitempty"`
	HLC        string          `json:"hlc,omitempty"`
	Created    bool            `json:"created,omitempty"`
	Deleted    bool            `json:"deleted,omitempty"`
	Attempt    int             `json:"attempt"`
	Replay     bool            `json:"replay,omitempty"`
}

// EventType names what a change did: document.created, document.deleted or
// document.changed.
func EventType(c core.Change) string {
	switch {
	case c.Deleted:
		return "document.deleted"
	case c.Created:
		return "document.created"
	default:
		return "document.changed"
	}
}

// send POSTs one change through the endpoint's breaker.
func (s *Service) send(ctx context.Context, ep Endpoint, c core.Change, attempt int, replay bool) error {
	coll, _, _ := strings.Cut(c.Doc, "/")
	d := Delivery{
		ID: ep.ID + ":" + c.Doc + "@" + strconv.FormatInt(c.Version, 10), Type: EventType(c), Webhook: ep.ID,
		Collection: coll, Doc: c.Doc, Version: c.Version, Prev: c.Prev, Author: c.Author,
		Created: c.Created, Deleted: c.Deleted, Attempt: attempt, Replay: replay,
	}
	if !c.HLC.IsZero() {
		d.HLC = c.HLC.String()
	}
	if len(c.Ops) > 0 {
		d.Ops, _ = json.Marshal(c.Ops)
	}
	body, err := json.Marshal(d)
	if err != nil {
		return err
	}
	_, err = s.breaker(ep.ID).cb.Execute(func() (struct{}, error) {
		rctx, cancel := context.WithTimeout(ctx, deliveryTimeout+time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(rctx, http.MethodPost, ep.URL, bytes.NewReader(body))
		if err != nil {
			return struct{}{}, err
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("User-Agent", "autoglm-webhooks/1")
		req.Header.Set(HeaderWebhook, ep.ID)
		req.Header.Set(HeaderDelivery, d.ID)
		req.Header.Set(HeaderSignature, Sign(ep.Secret, s.opt.Now(), body))
		resp, err := s.http.Do(req)
		if err != nil {
			return struct{}{}, err
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			return struct{}{}, fmt.Errorf("endpoint answered %d", resp.StatusCode)
		}
		return struct{}{}, nil
	})
	if err == nil {
		s.sent.Add(1)
	}
	return err
}
