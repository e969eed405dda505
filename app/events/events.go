// Package events publishes integration events: one CloudEvent per commit
// of a collection that has `events: true`, carrying the change summary (the
// delta) and the document version, never the whole document.
//
// Two paths, chosen by the component profile:
//
//   - Transactional outbox (profiles whose sidecar has the outbox state
//     component, e.g. components/saga): the event is written by the same
//     state transaction as the document, through Dapr's outbox, and daprd
//     publishes it. No event without a commit, no commit without an event.
//     The store does this (daprstore.Outbox); this package only shapes the
//     event.
//   - Post-commit task (every other profile, e.g. Redis state, whose
//     transactions are not atomic): after the commit the replica queues a
//     task that publishes the versions not yet published for the document,
//     read from the op log, with a deterministic id. Delivery is at least
//     once; an event lost because the replica died between the commit and
//     queueing the task goes out with the document's next change.
//
// docs/events.md describes the event format.
package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/open-autoglm/autoglm/app/collections"
	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/internal/logs"
	"github.com/open-autoglm/autoglm/app/kv"
	"github.com/open-autoglm/autoglm/app/tasks"
)

// CloudEvent types.
const (
	TypeCreated = "com.autoglm.document.created"
	TypeChanged = "com.autoglm.document.changed"
	TypeDeleted = "com.autoglm.document.deleted"
)

// Data is an event's data: the changes of one commit (or, on the task path,
// of the versions published together), oldest first.
type Data struct {
	Doc        string        `json:"doc"` // collection/id
	Collection string        `json:"collection"`
	ID         string        `json:"id"`
	Version    int64         `json:"version"`      // the document version after these changes
	Prev       int64         `json:"prev_version"` // the version they were applied to
	Changes    []core.Change `json:"changes"`
}

// Build shapes the changes of one document, in version order.
func Build(changes []core.Change) Data {
	if len(changes) == 0 {
		return Data{}
	}
	coll, id, _ := strings.Cut(changes[0].Doc, "/")
	return Data{Doc: changes[0].Doc, Collection: coll, ID: id,
		Version: changes[len(changes)-1].Version, Prev: changes[0].Prev, Changes: changes}
}

// Type is the CloudEvent type: created when the first change created the
// document, deleted when the last one deleted it, changed otherwise.
func (d Data) Type() string {
	switch {
	case len(d.Changes) == 0:
		return TypeChanged
	case d.Changes[len(d.Changes)-1].Deleted:
		return TypeDeleted
	case d.Changes[0].Created:
		return TypeCreated
	default:
		return TypeChanged
	}
}

// Attributes are the CloudEvent attributes set besides the envelope's own:
// type, subject (the document) and the extensions docversion and
// collection. Consumers deduplicate on (subject, docversion).
func (d Data) Attributes() map[string]string {
	return map[string]string{
		"type":       d.Type(),
		"subject":    d.Doc,
		"docversion": strconv.FormatInt(d.Version, 10),
		"collection": d.Collection,
	}
}

// State is what the task path needs of the state port: the per-document
// publish cursors, the publisher, and whether the events pub/sub exists.
type State interface {
	kv.Records
	kv.Publisher
	kv.Components
}

// Options configure the task path.
type Options struct {
	State   State
	Pubsub  string // where events go
	Topic   string
	Source  string // CloudEvent source: the app id
	Tasks   *tasks.Queue
	Changes func(ctx context.Context, k core.Key, from, to int64) ([]core.Change, error)
	// Integrations say which collections publish events (those with
	// `events: true` in the collections file).
	Integrations collections.Integrations
	// ViaOutbox reports whether the store publishes the collection's events
	// itself (Dapr outbox); the task path then stays out of the way.
	ViaOutbox func(ctx context.Context, collection string) bool
	Log       logrus.FieldLogger
	Now       func() time.Time
}

// KindPublish is the task kind of the post-commit path.
const KindPublish = "event.publish"

// Publisher is the post-commit task path.
type Publisher struct {
	opt Options

	mu        sync.Mutex
	checked   bool // the sidecar was asked whether it has the pubsub
	available bool
}

// New returns the publisher and registers its task kind.
func New(opt Options) *Publisher {
	if opt.Log == nil {
		opt.Log = logs.Discard()
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	p := &Publisher{opt: opt}
	opt.Tasks.Register(KindPublish, p.run)
	return p
}

type publishTask struct {
	Doc  string `json:"doc"`
	UpTo int64  `json:"upto"`
}

// Observe queues the publishing of committed changes (after each commit,
// on the replica that committed). It never blocks.
func (p *Publisher) Observe(changes []core.Change) {
	last := map[string]int64{}
	for _, c := range changes {
		coll, _, _ := strings.Cut(c.Doc, "/")
		if !p.opt.Integrations.Events(coll) {
			continue
		}
		last[c.Doc] = max(last[c.Doc], c.Version)
	}
	if len(last) == 0 || !p.enabled() {
		return
	}
	for doc, v := range last {
		coll, _, _ := strings.Cut(doc, "/")
		if p.opt.ViaOutbox != nil && p.opt.ViaOutbox(context.Background(), coll) {
			continue
		}
		b, _ := json.Marshal(publishTask{Doc: doc, UpTo: v})
		p.opt.Tasks.Submit(tasks.Task{Kind: KindPublish, Priority: tasks.Medium, Payload: b})
	}
}

// enabled reports whether the sidecar has the events pub/sub (asked once;
// a profile without it publishes no integration events).
func (p *Publisher) enabled() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.checked {
		return p.available
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	has, err := p.opt.State.Has(ctx, p.opt.Pubsub, "pubsub")
	if err != nil {
		return false // ask again next time
	}
	p.checked, p.available = true, has
	if !p.available {
		p.opt.Log.WithField("pubsub", p.opt.Pubsub).Info("no events pub/sub component: integration events are off")
	}
	return p.available
}

func cursorKey(doc string) string { return "_events:" + strings.Replace(doc, "/", ":", 1) }

type cursor struct {
	Published int64 `json:"published"`
}

// CloudEvent is the envelope published on the task path (and the shape
// daprd delivers on both paths).
type CloudEvent struct {
	SpecVersion     string `json:"specversion"`
	ID              string `json:"id"`
	Source          string `json:"source"`
	Type            string `json:"type"`
	Subject         string `json:"subject"`
	Time            string `json:"time"`
	DataContentType string `json:"datacontenttype"`
	DocVersion      string `json:"docversion"`
	Collection      string `json:"collection"`
	Data            Data   `json:"data"`
}

// run publishes the versions of a document after its publish cursor, up to
// the task's version, as one event, then moves the cursor.
func (p *Publisher) run(ctx context.Context, t tasks.Task) error {
	var pt publishTask
	if err := json.Unmarshal(t.Payload, &pt); err != nil {
		return tasks.Permanent(err)
	}
	k, err := core.ParseKey(pt.Doc)
	if err != nil {
		return tasks.Permanent(err)
	}
	key := cursorKey(pt.Doc)
	for range 10 {
		more := false
		err := kv.Retry(ctx, func(ctx context.Context) error {
			// A lost race means another replica moved the cursor: read it
			// again. Events already published may be published again;
			// consumers deduplicate.
			var cur cursor
			etag, err := kv.Load(ctx, p.opt.State, key, &cur)
			if err != nil || cur.Published >= pt.UpTo {
				return err
			}
			changes, err := p.opt.Changes(ctx, k, cur.Published+1, pt.UpTo)
			if err != nil {
				return err
			}
			if len(changes) == 0 {
				p.opt.Log.WithFields(logrus.Fields{"doc": pt.Doc, "from": cur.Published + 1}).
					Warn("event versions no longer in the op log; skipped")
			} else if err := p.publish(ctx, Build(changes)); err != nil {
				return err
			}
			cur.Published = pt.UpTo
			if len(changes) > 0 {
				cur.Published = changes[len(changes)-1].Version
			}
			if err := kv.Save(ctx, p.opt.State, key, etag, cur); err != nil {
				return err
			}
			more = cur.Published < pt.UpTo // the log ended early (a concurrent commit): go on
			return nil
		})
		if err != nil || !more {
			return err
		}
	}
	return errors.New("event cursor: the op log keeps ending early")
}

func (p *Publisher) publish(ctx context.Context, d Data) error {
	ce := CloudEvent{
		SpecVersion: "1.0", ID: d.Doc + "@" + strconv.FormatInt(d.Version, 10), Source: p.opt.Source,
		Type: d.Type(), Subject: d.Doc, Time: p.opt.Now().UTC().Format(time.RFC3339Nano),
		DataContentType: "application/json", DocVersion: strconv.FormatInt(d.Version, 10),
		Collection: d.Collection, Data: d,
	}
	body, err := json.Marshal(ce)
	if err != nil {
		return err
	}
	if err := p.opt.State.Publish(ctx, kv.Message{Pubsub: p.opt.Pubsub, Topic: p.opt.Topic, Body: body,
		ContentType: "application/cloudevents+json"}); err != nil {
		return fmt.Errorf("publish event %s: %w", ce.ID, err)
	}
	return nil
}
