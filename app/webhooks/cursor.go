package webhooks

// Ordered delivery: one cursor per endpoint and document, moved by
// compare-and-swap after each accepted change.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/sony/gobreaker/v2"

	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/kv"
	"github.com/open-autoglm/autoglm/app/tasks"
)

func cursorKey(endpoint, doc string) string {
	return "_webhooks:cursor:" + endpoint + ":" + strings.Replace(doc, "/", ":", 1)
}
func retryKey(endpoint string) string { return "_webhooks:retry:" + endpoint }

// cursor is the delivery state of one (endpoint, document).
type cursor struct {
	Delivered int64  `json:"delivered"`
	Target    int64  `json:"target"`
	Attempts  int    `json:"attempts,omitempty"`
	NextAt    int64  `json:"next_at,omitempty"` // Unix ms of the next try while parked
	LastError string `json:"last_error,omitempty"`
}

// runDeliver brings one endpoint's cursor of one document up to date.
func (s *Service) runDeliver(ctx context.Context, t tasks.Task) error {
	var dt deliverTask
	if err := json.Unmarshal(t.Payload, &dt); err != nil {
		return tasks.Permanent(fmt.Errorf("delivery task: %w", err))
	}
	k, err := core.ParseKey(dt.Doc)
	if err != nil {
		return tasks.Permanent(err)
	}
	ep, ok := s.endpoint(dt.Endpoint)
	if !ok {
		if err := s.Refresh(ctx); err != nil {
			return err
		}
		if ep, ok = s.endpoint(dt.Endpoint); !ok {
			return nil // the endpoint was removed
		}
	}
	defer s.locks.Lock(dt.Endpoint + "|" + dt.Doc)()
	key := cursorKey(ep.ID, dt.Doc)
	// A lost race means another replica moved the cursor: start again from
	// it.
	return kv.Retry(ctx, func(ctx context.Context) error {
		var cur cursor
		etag, err := s.load(ctx, key, &cur)
		if err != nil {
			return err
		}
		cur.Target = max(cur.Target, dt.UpTo)
		if cur.Target <= cur.Delivered {
			return nil
		}
		now := s.opt.Now()
		if cur.NextAt > now.UnixMilli() {
			// Parked: remember how far to go, and make sure the retry loop
			// wakes it (it may have woken it early, for an earlier try).
			if err := s.park(ctx, ep.ID, dt.Doc, cur.NextAt); err != nil {
				return err
			}
			if dt.UpTo > 0 {
				return s.save(ctx, key, etag, &cur)
			}
			return nil
		}
		return s.pump(ctx, ep, k, key, etag, &cur)
	})
}

// pump sends the pending versions in order, saving the cursor after each.
func (s *Service) pump(ctx context.Context, ep Endpoint, k core.Key, key, etag string, cur *cursor) error {
	changes, err := s.opt.Changes(ctx, k, cur.Delivered+1, cur.Target)
	if err != nil {
		return err
	}
	if len(changes) == 0 {
		// The versions left the op log before they could be sent; the
		// next delivery's prev_version shows the gap.
		s.opt.Log.WithFields(logrus.Fields{"webhook": ep.ID, "doc": k.String(), "from": cur.Delivered + 1}).
			Warn("webhook versions no longer in the op log; skipped")
		cur.Delivered = cur.Target
		return s.save(ctx, key, etag, cur)
	}
	for _, c := range changes {
		send := true
		if s.opt.Filter != nil {
			c, send = s.opt.Filter(ep, c)
		}
		if send {
			err = s.send(ctx, ep, c, cur.Attempts+1, false)
		}
		if err != nil {
			return s.failed(ctx, ep, k, key, etag, cur, c.Version, err)
		}
		cur.Delivered, cur.Attempts, cur.NextAt, cur.LastError = c.Version, 0, 0, ""
		if err := s.save(ctx, key, etag, cur); err != nil {
			return err
		}
		if etag, err = s.load(ctx, key, &cursor{}); err != nil {
			return err
		}
	}
	return nil
}

// failed records a failed attempt: park with backoff, or dead-letter the
// pending versions after MaxAttempts.
func (s *Service) failed(ctx context.Context, ep Endpoint, k core.Key, key, etag string, cur *cursor, v int64, cause error) error {
	s.failures.Add(1)
	cur.LastError = cause.Error()
	var d time.Duration
	if errors.Is(cause, gobreaker.ErrOpenState) || errors.Is(cause, gobreaker.ErrTooManyRequests) {
		// The endpoint was not called: no attempt is spent. Come back
		// around when the breaker lets a probe through.
		d = s.opt.Breaker.Open/4 + time.Duration(mrand.Int64N(int64(s.opt.Breaker.Open/4)+1))
	} else {
		cur.Attempts++
		d = min(s.opt.Backoff<<(cur.Attempts-1), s.opt.MaxBackoff)
		d = time.Duration(mrand.Int64N(int64(d) + 1)) // full jitter
	}
	// A refused target stays refused until the rules change: retrying
	// cannot help, so it is dead-lettered at once, to be replayed after.
	var refused *RefusedError
	log := s.opt.Log.WithFields(logrus.Fields{"webhook": ep.ID, "doc": k.String(), "version": v, "attempt": cur.Attempts})
	if cur.Attempts >= s.opt.MaxAttempts || errors.As(cause, &refused) {
		letter := DeadLetter{ID: newID(), Endpoint: ep.ID, Doc: k.String(), From: v, To: cur.Target,
			Attempts: cur.Attempts, Error: cur.LastError, At: s.opt.Now().UTC()}
		if err := s.addDead(ctx, letter); err != nil {
			return err
		}
		log.WithError(cause).Warn("webhook delivery dead-lettered")
		cur.Delivered, cur.Attempts, cur.NextAt = cur.Target, 0, 0
		return s.save(ctx, key, etag, cur)
	}
	cur.NextAt = s.opt.Now().Add(d).UnixMilli()
	// On the retry list first: a crash before the cursor is saved leaves a
	// harmless wake-up, never a parked document nobody wakes.
	if err := s.park(ctx, ep.ID, k.String(), cur.NextAt); err != nil {
		return err
	}
	log.WithError(cause).WithField("retry_in", d.Round(time.Millisecond)).Info("webhook delivery failed; parked")
	return s.save(ctx, key, etag, cur)
}
