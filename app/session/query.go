package session

import (
	"context"
	"maps"
	"slices"
	"sync/atomic"

	"github.com/open-autoglm/autoglm/app/auth"
	"github.com/open-autoglm/autoglm/app/collections"
	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/protocol"
	"github.com/open-autoglm/autoglm/app/query"
	"github.com/open-autoglm/autoglm/app/query/live"
)

// Live queries: {"t":"sub","coll":…,"query":{…},"qid":…,"have":{id: v}}.
// The session sends the current result (snapshots, or only deltas for the
// documents the client has), then synced for the qid; then, live, added,
// deltas and removed, each carrying the qid. The result is matched in
// memory by the live query engine (package live); the session shows each
// document through its reader's view.

// maxQID bounds a query id.
const maxQID = 128

// maxHave bounds the documents a resuming client may list in have.
const maxHave = 10000

// queryQueue is how many batches of query events wait for the session
// before it resynchronises its queries.
const queryQueue = 256

// liveQuery is one live query of the session.
type liveQuery struct {
	qid, coll string
	q         query.Query
	sub       *live.Sub
	// held is what the client holds of each document of the result: its
	// version and the key of the view it was shown through.
	held map[string]heldDoc
	lost atomic.Bool
}

type heldDoc struct {
	v    int64
	view string
}

// queryBatch is the events of one change for one query.
type queryBatch struct {
	qid string
	sub *live.Sub
	evs []live.Event
}

// queryState holds the session's live queries (owned by Run).
type queryState struct {
	queries map[string]*liveQuery
	events  chan queryBatch
	lost    chan struct{}
}

func newQueryState() queryState {
	return queryState{queries: map[string]*liveQuery{}, events: make(chan queryBatch, queryQueue),
		lost: make(chan struct{}, 1)}
}

func (s *Session) queryErr(ctx context.Context, qid string, err error) error {
	m := protocol.ErrorMessage(protocol.TError, err)
	m.QID = truncate(qid, maxQID)
	return s.send.Send(ctx, m)
}

// subscribeQuery starts (or replaces) the live query m.QID.
func (s *Session) subscribeQuery(ctx context.Context, m protocol.Message) error {
	if len(m.QID) > maxQID {
		return s.queryErr(ctx, m.QID, core.Errorf(core.CodeBadRequest, "qid longer than %d bytes", maxQID))
	}
	if !core.ValidCollection(m.Coll) {
		return s.queryErr(ctx, m.QID, core.Errorf(core.CodeInvalidName, "collection name %q: want [a-z][a-z0-9_-]{0,63}", truncate(m.Coll, 64)))
	}
	if err := s.opt.Policy.CanRead(s.identity, m.Coll); err != nil {
		return s.queryErr(ctx, m.QID, err)
	}
	raw := m.Query
	if len(raw) == 0 {
		raw = []byte(`{}`)
	}
	q, err := query.Parse(raw)
	if err != nil {
		return s.queryErr(ctx, m.QID, err)
	}
	if s.opt.Queries == nil {
		return s.queryErr(ctx, m.QID, core.Errorf(core.CodeUnavailable, "live queries are not served by this replica"))
	}
	if len(m.Have) > maxHave {
		return s.queryErr(ctx, m.QID, core.Errorf(core.CodeTooLarge, "have lists more than %d documents", maxHave))
	}
	for id, v := range m.Have {
		if _, err := core.NewKey(m.Coll, id); err != nil || v < 0 {
			return s.queryErr(ctx, m.QID, core.Errorf(core.CodeBadRequest, "have: %q: want a document id and a version >= 0", truncate(id, 64)))
		}
	}
	if old, ok := s.qs.queries[m.QID]; ok {
		old.sub.Close()
		delete(s.qs.queries, m.QID)
	} else if len(s.docs)+len(s.qs.queries) >= s.opt.MaxSubs {
		return s.queryErr(ctx, m.QID, core.Errorf(core.CodeTooLarge, "more than %d subscriptions on one connection", s.opt.MaxSubs))
	}
	lq := &liveQuery{qid: m.QID, coll: m.Coll, q: q, held: map[string]heldDoc{}}
	for id, v := range m.Have {
		lq.held[id] = heldDoc{v: v}
	}
	s.qs.queries[m.QID] = lq
	return s.startQuery(ctx, lq)
}

// startQuery registers lq with the engine and brings the client from what
// it holds to the current result, then says synced.
func (s *Session) startQuery(ctx context.Context, lq *liveQuery) error {
	view := s.viewFunc(lq.coll)
	sink := func(sub *live.Sub, evs []live.Event) {
		select {
		case s.qs.events <- queryBatch{qid: lq.qid, sub: sub, evs: evs}:
		default:
			lq.lost.Store(true)
			select {
			case s.qs.lost <- struct{}{}:
			default:
			}
		}
	}
	sub, initial, err := s.opt.Queries.Subscribe(ctx, lq.coll, lq.q, live.Visible(lq.q, view), sink)
	if err != nil {
		delete(s.qs.queries, lq.qid)
		return s.queryErr(ctx, lq.qid, err)
	}
	lq.sub = sub
	had := lq.held
	lq.held = map[string]heldDoc{}
	in := map[string]bool{}
	for _, d := range initial {
		in[d.ID] = true
		if err := s.catchUpQueryDoc(ctx, lq, d, had[d.ID]); err != nil {
			return err
		}
	}
	for _, id := range slices.Sorted(maps.Keys(had)) {
		if !in[id] {
			if err := s.send.Send(ctx, protocol.Message{T: protocol.TRemoved, QID: lq.qid, Doc: lq.coll + "/" + id,
				V: had[id].v, Why: live.WhyResynced}); err != nil {
				return err
			}
		}
	}
	return s.send.Send(ctx, protocol.Message{T: protocol.TSynced, QID: lq.qid, Coll: lq.coll})
}

// viewFunc is the session's view of documents of coll (nil: no read
// rules, everything is visible).
func (s *Session) viewFunc(coll string) func(map[string]any) collections.View {
	if !s.opt.Policy.Rules(coll) {
		return nil
	}
	p, id := s.opt.Policy, s.identity
	return func(data map[string]any) collections.View { return p.View(id, coll, data) }
}

func (s *Session) viewOf(coll string, data map[string]any) collections.View {
	if f := s.viewFunc(coll); f != nil {
		return f(data)
	}
	return collections.View{}
}

// catchUpQueryDoc brings the client's copy of d (held: what it has) to d's
// version: nothing when it is current, the deltas in between when the op
// log still holds them and none changed who sees what, else a snapshot.
func (s *Session) catchUpQueryDoc(ctx context.Context, lq *liveQuery, d *live.Doc, held heldDoc) error {
	view := s.viewOf(lq.coll, d.Data)
	// A copy the client resumes with counts as seen through the current
	// view, as a resumed document subscription does (docs/security.md).
	same := held.view == view.Key() || held.view == "" && held.v > 0
	switch {
	case held.v == d.Version && same:
		lq.held[d.ID] = heldDoc{v: d.Version, view: view.Key()}
		return nil
	case held.v > 0 && held.v < d.Version && same:
		k := core.Key{Collection: lq.coll, ID: d.ID}
		changes, err := s.backend.Changes(ctx, k, held.v+1, d.Version)
		if err == nil && int64(len(changes)) == d.Version-held.v && !s.opt.Policy.Touches(lq.coll, changes...) {
			for _, c := range changes {
				if err := s.sendQueryDelta(ctx, lq, c, view); err != nil {
					return err
				}
			}
			lq.held[d.ID] = heldDoc{v: d.Version, view: view.Key()}
			return nil
		}
	}
	return s.sendQueryDoc(ctx, lq, protocol.TSnap, d, view)
}

func (s *Session) sendQueryDoc(ctx context.Context, lq *liveQuery, t string, d *live.Doc, view collections.View) error {
	lq.held[d.ID] = heldDoc{v: d.Version, view: view.Key()}
	return s.send.Send(ctx, protocol.Message{T: t, QID: lq.qid, Doc: lq.coll + "/" + d.ID, V: d.Version, Data: view.Data(d.Data)})
}

func (s *Session) sendQueryDelta(ctx context.Context, lq *liveQuery, c core.Change, view collections.View) error {
	m := protocol.Delta(c)
	m.Ops, m.QID = view.Ops(c.Ops), lq.qid
	if c.Author == s.client {
		m.Op = c.OpID // only its author can match it
	}
	return s.send.Send(ctx, m)
}

// queryEvents sends what one change did to a live query's result.
func (s *Session) queryEvents(ctx context.Context, b queryBatch) error {
	lq, ok := s.qs.queries[b.qid]
	if !ok || lq.sub != b.sub || lq.lost.Load() {
		return nil // ended, replaced, or about to be resynchronised
	}
	for _, ev := range b.evs {
		d := ev.Doc
		switch ev.Kind {
		case live.Added:
			if err := s.sendQueryDoc(ctx, lq, protocol.TAdded, d, s.viewOf(lq.coll, d.Data)); err != nil {
				return err
			}
		case live.Changed:
			view := s.viewOf(lq.coll, d.Data)
			held := lq.held[d.ID]
			if c := ev.Delta; c != nil && held.v == c.Version-1 && held.view == view.Key() && !s.opt.Policy.Touches(lq.coll, *c) {
				lq.held[d.ID] = heldDoc{v: d.Version, view: view.Key()}
				if err := s.sendQueryDelta(ctx, lq, *c, view); err != nil {
					return err
				}
				continue
			}
			if err := s.sendQueryDoc(ctx, lq, protocol.TSnap, d, view); err != nil {
				return err
			}
		case live.Removed:
			delete(lq.held, d.ID)
			if err := s.send.Send(ctx, protocol.Message{T: protocol.TRemoved, QID: lq.qid, Doc: lq.coll + "/" + d.ID,
				V: d.Version, Why: ev.Why}); err != nil {
				return err
			}
		}
	}
	return nil
}

// resyncQueries restarts the live queries that lost events (the session
// fell behind): each is brought from what the client holds to its current
// result, as a resume with have would.
func (s *Session) resyncQueries(ctx context.Context) error {
	for _, qid := range slices.Sorted(maps.Keys(s.qs.queries)) {
		lq := s.qs.queries[qid]
		if !lq.lost.Load() {
			continue
		}
		if err := s.restartQuery(ctx, lq); err != nil {
			return err
		}
	}
	return nil
}

func (s *Session) restartQuery(ctx context.Context, lq *liveQuery) error {
	lq.sub.Close()
	lq.lost.Store(false)
	return s.startQuery(ctx, lq)
}

// unsubscribeQuery ends the live query qid.
func (s *Session) unsubscribeQuery(qid string) {
	if lq, ok := s.qs.queries[qid]; ok {
		lq.sub.Close()
		delete(s.qs.queries, qid)
	}
}

// closeQueries ends every live query (the session ended).
func (s *Session) closeQueries() {
	for qid := range s.qs.queries {
		s.unsubscribeQuery(qid)
	}
}

// refreshQueries checks every live query against a refreshed identity: one
// it may no longer read ends with access_revoked; the others are matched
// again under the new identity's read rules, and the client hears what
// that changes.
func (s *Session) refreshQueries(ctx context.Context, id auth.Identity) error {
	for _, qid := range slices.Sorted(maps.Keys(s.qs.queries)) {
		lq := s.qs.queries[qid]
		if err := s.opt.Policy.CanRead(id, lq.coll); err != nil {
			s.unsubscribeQuery(qid)
			if err := s.queryErr(ctx, qid, core.Errorf(core.CodeAccessRevoked,
				"the refreshed token may no longer read %s; the query has ended", lq.coll)); err != nil {
				return err
			}
			continue
		}
		if err := s.restartQuery(ctx, lq); err != nil {
			return err
		}
	}
	return nil
}
