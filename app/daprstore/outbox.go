package daprstore

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	dapr "github.com/dapr/go-sdk/client"

	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/events"
	"github.com/open-autoglm/autoglm/app/internal/daprconn"
)

// Outbox makes the commits of event collections publish an integration
// event through Dapr's transactional outbox: the document and the event are
// one state transaction, and daprd publishes the event once it committed.
//
// Store names a second state component on the same database and table as
// the main store, carrying the outbox metadata (outboxPublishPubsub,
// outboxPublishTopic, outboxPubsub, outboxDiscardWhenMissingState). It is a
// separate component because Dapr publishes one event for every upsert of
// every transaction on an outbox store, and the main store's transactions
// also write op-log entries and index shards.
//
// Such a commit is two steps. The op-log archive and trims of the previous
// commit (correct whether or not this commit wins) go first through the
// main store, as on Redis. Then one transaction on the outbox store upserts
// the document (guarded by its ETag) and, with the same key, a projection
// (`outbox.projection: true`) whose value is the event data (events.Data):
// Dapr publishes the projection, never the document. The index follows
// with its own compare-and-swap. The transaction goes through daprd's HTTP
// API, which keeps the projection's content type (application/json), so
// the event's data is a JSON object; the gRPC API would make it a string.
//
// Dapr 1.14.0 never gives up on the marker of an outbox transaction that
// failed: its relay retries the state lookup in a loop without end, using a
// core of the sidecar. So the store does not send an outbox transaction it
// knows will fail: it first checks that the document still has the ETag
// the commit was based on. With one writer per document (one replica, as
// the engine serialises writes per document) the check is exact; with
// several replicas writing the same document a race between the check and
// the transaction remains (see docs/events.md).
type Outbox struct {
	Store  string // the outbox state component
	HTTP   string // daprd's HTTP API base, e.g. http://127.0.0.1:3500
	Token  string // DAPR_API_TOKEN
	Client *http.Client
	// Events reports whether a collection publishes integration events.
	Events func(collection string) bool
}

// UseOutbox turns the outbox on for the collections o.Events names, when
// the sidecar has the component o.Store and the main store is
// transactional. Call it before the first commit.
func (s *Store) UseOutbox(o Outbox) {
	if o.Client == nil {
		o.Client = &http.Client{Timeout: 30 * time.Second}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.outbox = &o
}

// OutboxActive reports whether commits of collection go through the
// outbox.
func (s *Store) OutboxActive(ctx context.Context, collection string) bool {
	atomic, err := s.atomic(ctx)
	if err != nil || !atomic {
		return false
	}
	return s.outboxFor(collection)
}

type txOp struct {
	Operation string    `json:"operation"`
	Request   txRequest `json:"request"`
}

type txRequest struct {
	Key         string            `json:"key"`
	Value       any               `json:"value"`
	ETag        string            `json:"etag,omitempty"`
	Options     map[string]string `json:"options,omitempty"`
	Metadata    map[string]string `json:"metadata,omitempty"`
	ContentType string            `json:"contentType,omitempty"`
}

// commitOutbox writes a commit and its event (see Outbox).
func (s *Store) commitOutbox(ctx context.Context, c core.Commit, body []byte, side []*dapr.StateOperation) error {
	if len(side) > 0 {
		if err := s.client.ExecuteStateTransaction(ctx, s.name, nil, side); err != nil {
			return classify("archive "+c.Key.String(), err)
		}
	}
	key := docKey(c.Key)
	item, err := s.client.GetState(ctx, s.name, key, nil)
	if err != nil {
		return classify("commit "+c.Key.String(), err)
	}
	current := ""
	if item != nil && len(item.Value) > 0 {
		current = item.Etag
	}
	if current != c.ETag {
		return fmt.Errorf("commit %s: %w: the document changed since it was read", c.Key, core.ErrVersionConflict)
	}
	data := events.Build(c.Changes)
	ops := []txOp{
		{Operation: "upsert", Request: txRequest{Key: key, Value: json.RawMessage(body), ETag: c.ETag,
			Options:  map[string]string{"concurrency": "first-write", "consistency": "strong"},
			Metadata: data.Attributes()}},
		// The projection comes last: daprd removes it from the list while
		// iterating over it.
		{Operation: "upsert", Request: txRequest{Key: key, Value: data, ContentType: "application/json",
			Metadata: map[string]string{"outbox.projection": "true"}}},
	}
	if err := s.outboxTransaction(ctx, ops); err != nil {
		return classify("commit "+c.Key.String(), err)
	}
	if c.IndexAdd || c.IndexRemove {
		s.indexCAS(ctx, c.Key, c.IndexAdd)
	}
	return nil
}

func (s *Store) outboxTransaction(ctx context.Context, ops []txOp) error {
	return daprconn.HTTPTransaction(ctx, s.outbox.Client, s.outbox.HTTP, s.outbox.Token, s.outbox.Store, "outbox transaction", ops)
}

// indexCAS brings the collection listing in step after a commit written
// outside one transaction with it (bounded retries; the document is
// already durable).
func (s *Store) indexCAS(ctx context.Context, k core.Key, add bool) {
	for attempt := 0; attempt < 10; attempt++ {
		op, err := s.indexOp(ctx, k, add)
		if err == nil && op != nil {
			err = s.client.SaveBulkState(ctx, s.name, op.Item)
		}
		if err == nil {
			return
		}
	}
}

func (s *Store) outboxFor(collection string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.outbox != nil && s.outboxFound && s.outbox.Events != nil && s.outbox.Events(collection)
}
