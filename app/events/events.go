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
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	dapr "github.com/dapr/go-sdk/client"
	"github.com/sirupsen/logrus"

	"github.com/open-autoglm/autoglm/app/collections"
	"github.com/open-autoglm/autoglm/app/core"
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

// Client is the part of the Dapr client the task path uses.
type Client interface {
	PublishEvent(ctx context.Context, pubsubName, topicName string, data interface{}, opts ...dapr.PublishEventOption) error
	GetState(ctx context.Context, storeName, key string, meta map[string]string) (*dapr.StateItem, error)
	SaveState(ctx context.Context, storeName, key string, data []byte, meta map[string]string, so ...dapr.StateOption) error
	SaveStateWithETag(ctx context.Context, storeName, key string, data []byte, etag string, meta map[string]string, so ...dapr.StateOption) error
	GetMetadata(ctx context.Context) (*dapr.GetMetadataResponse, error)
}

// Options configure the task path.
type Options struct {
	Client      Client
	Pubsub      string // where events go
	Topic       string
	Store       string // the state store (per-document publish cursors)
	Source      string // CloudEvent source: the app id
	Tasks       *tasks.Queue
	Changes     func(ctx context.Context, k core.Key, from, to int64) ([]core.Change, error)
	Collections *collections.Config
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
		l := logrus.New()
		l.SetOutput(io.Discard)
		opt.Log = l
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if opt.Collections == nil {
		opt.Collections = collections.Default()
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
		if col, _ := p.opt.Collections.Collection(coll); col == nil || !col.Events {
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
	md, err := p.opt.Client.GetMetadata(ctx)
	if err != nil {
		return false // ask again next time
	}
	p.checked = true
	for _, c := range md.RegisteredComponents {
		if c.Name == p.opt.Pubsub && strings.HasPrefix(c.Type, "pubsub.") {
			p.available = true
		}
	}
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
		item, err := p.opt.Client.GetState(ctx, p.opt.Store, key, nil)
		if err != nil {
			return err
		}
		var cur cursor
		if item != nil && len(item.Value) > 0 {
			if err := json.Unmarshal(item.Value, &cur); err != nil {
				return err
			}
		}
		if cur.Published >= pt.UpTo {
			return nil
		}
		changes, err := p.opt.Changes(ctx, k, cur.Published+1, pt.UpTo)
		if err != nil {
			return err
		}
		if len(changes) == 0 {
			p.opt.Log.WithFields(logrus.Fields{"doc": pt.Doc, "from": cur.Published + 1}).
				Warn("event versions no longer in the op log; skipped")
		} else {
			if err := p.publish(ctx, Build(changes)); err != nil {
				return err
			}
		}
		cur.Published = pt.UpTo
		if len(changes) > 0 {
			cur.Published = changes[len(changes)-1].Version
		}
		b, _ := json.Marshal(cur)
		opts := []dapr.StateOption{dapr.WithConcurrency(dapr.StateConcurrencyFirstWrite)}
		if item == nil || item.Etag == "" {
			err = p.opt.Client.SaveState(ctx, p.opt.Store, key, b, nil, opts...)
		} else {
			err = p.opt.Client.SaveStateWithETag(ctx, p.opt.Store, key, b, item.Etag, nil, opts...)
		}
		if err == nil {
			if cur.Published < pt.UpTo {
				continue // the log ended early (a concurrent commit): go on
			}
			return nil
		}
		// Another replica moved the cursor: read it again. Events already
		// published may be published again; consumers deduplicate.
	}
	return errors.New("event cursor: too many concurrent updates")
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
	if err := p.opt.Client.PublishEvent(ctx, p.opt.Pubsub, p.opt.Topic, body,
		dapr.PublishEventWithContentType("application/cloudevents+json")); err != nil {
		return fmt.Errorf("publish event %s: %w", ce.ID, err)
	}
	return nil
}
