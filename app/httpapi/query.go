package httpapi

import (
	"context"
	"encoding/json"
	"net/http"

	"github.com/open-autoglm/autoglm/app/auth"
	"github.com/open-autoglm/autoglm/app/collections"
	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/query"
	"github.com/open-autoglm/autoglm/app/query/live"
)

// StoreQuerier runs a query through the state store's own query engine
// (package daprquery). ok is false when it cannot serve the query; the
// in-memory index then does.
type StoreQuerier interface {
	Query(ctx context.Context, coll string, q query.Query, admit live.Admit) (docs []*live.Doc, more, ok bool, err error)
}

// DefaultQueryLimit is the page size of a REST query without "limit".
const DefaultQueryLimit = 100

// readerView is id's view function for documents of coll under its read
// rules; nil when the collection has none (everything is visible).
func readerView(p auth.Policy, id auth.Identity, coll string) func(map[string]any) collections.View {
	if !p.Rules(coll) {
		return nil
	}
	return func(data map[string]any) collections.View { return p.View(id, coll, data) }
}

// serveQuery answers POST /v1/docs/{coll}/query: the documents of the
// collection that match the query and that the caller may read, each as
// its read rules show it, in the query's order, with a cursor to the next
// page when more follow. A condition or order key on a field the caller may
// not read of a document does not match that document.
func (s *Server) serveQuery(w http.ResponseWriter, r *http.Request) {
	coll, id, ok := s.collectionReader(w, r)
	if !ok {
		return
	}
	var body json.RawMessage
	if !s.decodeBody(w, r, &body) {
		return
	}
	q, err := query.Parse(body)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if q.Limit == 0 {
		q.Limit = DefaultQueryLimit
	}
	if s.Queries == nil {
		s.fail(w, r, core.Errorf(core.CodeUnavailable, "queries are not served by this replica"))
		return
	}
	view := readerView(s.Access.Policy, id, coll)
	admit := live.Visible(q, view)
	var (
		docs        []*live.Doc
		more, found bool
	)
	if s.StoreQueries != nil {
		// The store holds every acknowledged write.
		docs, more, found, err = s.StoreQueries.Query(r.Context(), coll, q, admit)
	}
	if !found && err == nil {
		s.Queries.Flush() // every change this replica has heard is in
		docs, more, err = s.Queries.Query(r.Context(), coll, q, admit)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	resp := listResponse{Collection: coll, Items: make([]listItem, 0, len(docs))}
	for _, d := range docs {
		data := d.Data
		if view != nil {
			data = view(d.Data).Data(d.Data)
		}
		resp.Items = append(resp.Items, listItem{ID: d.ID, Version: d.Version, Data: data})
	}
	if more && len(docs) > 0 {
		last := docs[len(docs)-1]
		resp.Next = q.CursorOf(query.Item{ID: last.ID, Data: last.Data}).Encode()
	}
	writeJSON(w, http.StatusOK, resp)
}
