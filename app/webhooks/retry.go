package webhooks

// Parked documents: the per-endpoint retry lists and the loop that wakes
// them.

import (
	"context"
	"encoding/json"
	"time"

	"github.com/open-autoglm/autoglm/app/tasks"
)

type retryList struct {
	Docs map[string]int64 `json:"docs"` // document → Unix ms of its next try
}

func (s *Service) park(ctx context.Context, endpoint, doc string, at int64) error {
	return update(ctx, s, retryKey(endpoint), func(r *retryList) bool {
		if r.Docs == nil {
			r.Docs = map[string]int64{}
		}
		if old, ok := r.Docs[doc]; ok && old <= at {
			return false
		}
		r.Docs[doc] = at
		return true
	})
}

// Run checks the retry lists every Tick and re-queues the documents whose
// time has come; it also reloads the endpoint registry. It returns when ctx
// ends.
func (s *Service) Run(ctx context.Context) {
	t := time.NewTicker(s.opt.Tick)
	defer t.Stop()
	refresh := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if refresh++; refresh%5 == 1 {
			if err := s.Refresh(ctx); err != nil {
				s.opt.Log.WithError(err).Debug("webhook registry not refreshed")
			}
		}
		s.wake(ctx)
	}
}

// wake re-queues parked documents that are due.
func (s *Service) wake(ctx context.Context) {
	now := s.opt.Now().UnixMilli()
	for _, e := range *s.endpoints.Load() {
		var due []string
		err := update(ctx, s, retryKey(e.ID), func(r *retryList) bool {
			due = due[:0]
			for doc, at := range r.Docs {
				if at <= now {
					due = append(due, doc)
					delete(r.Docs, doc)
				}
			}
			return len(due) > 0
		})
		if err != nil {
			s.opt.Log.WithError(err).WithField("webhook", e.ID).Debug("retry list not read")
			continue
		}
		for _, doc := range due {
			b, _ := json.Marshal(deliverTask{Endpoint: e.ID, Doc: doc})
			s.opt.Tasks.Submit(tasks.Task{Kind: KindDeliver, Priority: s.opt.Priority, Payload: b})
		}
	}
}
