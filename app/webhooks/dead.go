package webhooks

// Dead letters: versions an endpoint did not accept, and their replay.

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/tasks"
)

const deadKey = "_webhooks:dead"

// DeadLetter is a range of versions of one document that one endpoint did
// not accept within MaxAttempts.
type DeadLetter struct {
	ID       string    `json:"id"`
	Endpoint string    `json:"webhook"`
	Doc      string    `json:"doc"`
	From     int64     `json:"from_version"`
	To       int64     `json:"to_version"`
	Attempts int       `json:"attempts"`
	Error    string    `json:"error"`
	At       time.Time `json:"at"`
}

type deadList struct {
	Letters []DeadLetter `json:"letters"`
}

// maxDead bounds the dead-letter list; the oldest letters go first.
const maxDead = 1000

func (s *Service) addDead(ctx context.Context, l DeadLetter) error {
	s.deadLettered.Add(1)
	return update(ctx, s, deadKey, func(d *deadList) bool {
		d.Letters = append(d.Letters, l)
		if len(d.Letters) > maxDead {
			d.Letters = d.Letters[len(d.Letters)-maxDead:]
		}
		return true
	})
}

// DeadLetters lists the dead letters, oldest first.
func (s *Service) DeadLetters(ctx context.Context) ([]DeadLetter, error) {
	var d deadList
	_, err := s.load(ctx, deadKey, &d)
	return d.Letters, err
}

// deliverDead handles a delivery task that failed every task-level retry
// (its store reads failed, not the endpoint): the pending versions are
// recorded as a dead letter so they can be replayed.
func (s *Service) deliverDead(ctx context.Context, t tasks.Task) {
	var dt deliverTask
	if json.Unmarshal(t.Payload, &dt) != nil {
		return
	}
	var cur cursor
	if _, err := s.load(ctx, cursorKey(dt.Endpoint, dt.Doc), &cur); err != nil {
		s.opt.Log.WithError(err).Warn("dead delivery task: cursor unreadable")
	}
	to := max(cur.Target, dt.UpTo)
	if to <= cur.Delivered {
		return
	}
	_ = s.addDead(ctx, DeadLetter{ID: newID(), Endpoint: dt.Endpoint, Doc: dt.Doc, From: cur.Delivered + 1, To: to,
		Error: "delivery task failed every retry", At: s.opt.Now().UTC()})
}

type replayTask struct {
	Letter string `json:"letter"`
}

// Replay queues a dead letter to be sent again and returns the task id.
func (s *Service) Replay(ctx context.Context, id string) (string, error) {
	letters, err := s.DeadLetters(ctx)
	if err != nil {
		return "", err
	}
	if !slices.ContainsFunc(letters, func(l DeadLetter) bool { return l.ID == id }) {
		return "", core.Errorf(core.CodeNotFound, "no dead letter %q", id)
	}
	b, _ := json.Marshal(replayTask{Letter: id})
	t, err := s.opt.Tasks.Enqueue(ctx, tasks.Task{Kind: KindReplay, Priority: tasks.Medium, Payload: b})
	return t.ID, err
}

// runReplay sends a dead letter's versions again, in order, flagged
// replay, and removes the letter once all were accepted.
func (s *Service) runReplay(ctx context.Context, t tasks.Task) error {
	var rt replayTask
	if err := json.Unmarshal(t.Payload, &rt); err != nil {
		return tasks.Permanent(err)
	}
	letters, err := s.DeadLetters(ctx)
	if err != nil {
		return err
	}
	i := slices.IndexFunc(letters, func(l DeadLetter) bool { return l.ID == rt.Letter })
	if i < 0 {
		return nil // already replayed
	}
	l := letters[i]
	ep, ok := s.endpoint(l.Endpoint)
	if !ok {
		return tasks.Permanent(fmt.Errorf("webhook %q no longer exists", l.Endpoint))
	}
	k, err := core.ParseKey(l.Doc)
	if err != nil {
		return tasks.Permanent(err)
	}
	changes, err := s.opt.Changes(ctx, k, l.From, l.To)
	if err != nil {
		return err
	}
	for _, c := range changes {
		send := true
		if s.opt.Filter != nil {
			c, send = s.opt.Filter(ep, c)
		}
		if !send {
			continue
		}
		if err := s.send(ctx, ep, c, 1, true); err != nil {
			return fmt.Errorf("replay %s@%d: %w", l.Doc, c.Version, err)
		}
	}
	return update(ctx, s, deadKey, func(d *deadList) bool {
		n := len(d.Letters)
		d.Letters = slices.DeleteFunc(d.Letters, func(x DeadLetter) bool { return x.ID == l.ID })
		return len(d.Letters) != n
	})
}
