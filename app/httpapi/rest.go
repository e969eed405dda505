package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/open-autoglm/autoglm/app/auth"
	"github.com/open-autoglm/autoglm/app/clock"
	"github.com/open-autoglm/autoglm/app/collections"
	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/merge"
	"github.com/open-autoglm/autoglm/app/protocol"
)

// docResponse is a document on the wire.
type docResponse struct {
	Doc     string         `json:"doc"`
	Version int64          `json:"version"`
	Data    map[string]any `json:"data,omitempty"`
	Deleted bool           `json:"deleted,omitempty"`
	Created bool           `json:"created,omitempty"`
	Dup     bool           `json:"duplicate,omitempty"`
}

func (s *Server) serveDoc(w http.ResponseWriter, r *http.Request) {
	k, err := core.NewKey(r.PathValue("coll"), r.PathValue("id"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	id, err := s.identify(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		if err := s.Access.Policy.CanRead(id, k.Collection); err != nil {
			s.fail(w, r, err)
			return
		}
		s.getDoc(w, r, k, id)
	case http.MethodPut:
		s.putDoc(w, r, k, id)
	case http.MethodPatch:
		s.patchDoc(w, r, k, id)
	case http.MethodDelete:
		s.deleteDoc(w, r, k, id)
	default:
		w.Header().Set("Allow", "GET, HEAD, PUT, PATCH, DELETE")
		s.fail(w, r, core.Errorf(core.CodeMethodNotAllowed, "%s is not served on documents", r.Method))
	}
}

func (s *Server) getDoc(w http.ResponseWriter, r *http.Request, k core.Key, id auth.Identity) {
	stored, err := s.Engine.Load(r.Context(), k)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if !stored.Doc.Exists() {
		s.fail(w, r, core.Errorf(core.CodeNotFound, "document %s not found", k))
		return
	}
	view := s.Access.Policy.View(id, k.Collection, stored.Doc.Data())
	if view.Denied {
		s.fail(w, r, notReadable(k))
		return
	}
	etag := etagOf(stored.Doc.Version)
	w.Header().Set("ETag", etag)
	if inm := r.Header.Get("If-None-Match"); inm != "" && inm == etag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	writeJSON(w, http.StatusOK, docResponse{Doc: k.String(), Version: stored.Doc.Version, Data: view.Data(stored.Doc.Data())})
}

// notReadable is the refusal of a document the caller's read rules hide.
func notReadable(k core.Key) error {
	return core.Errorf(core.CodeNotReadable, "the read rules of %s do not let the caller read this document", k.Collection)
}

func (s *Server) putDoc(w http.ResponseWriter, r *http.Request, k core.Key, id auth.Identity) {
	var body map[string]json.RawMessage
	if !s.decodeBody(w, r, &body) {
		return
	}
	if body == nil {
		s.fail(w, r, core.Errorf(core.CodeBadRequest, "body must be a JSON object"))
		return
	}
	keys := make([]string, 0, len(body))
	for f := range body {
		keys = append(keys, f)
	}
	slices.Sort(keys)
	ops := make([]merge.FieldOp, 0, len(body))
	for _, f := range keys {
		ops = append(ops, merge.FieldOp{Op: merge.KindSet, Path: f, Value: body[f]})
	}
	op, ok := s.restOp(w, r, id)
	if !ok {
		return
	}
	op.Ops, op.Replace = ops, true
	s.write(w, r, k, id, op)
}

type patchBody struct {
	Base *int64          `json:"base"` // absent: If-Match's version, else no base
	HLC  string          `json:"hlc"`
	Ops  []merge.FieldOp `json:"ops"`
}

func (s *Server) patchDoc(w http.ResponseWriter, r *http.Request, k core.Key, id auth.Identity) {
	var body patchBody
	if !s.decodeBody(w, r, &body) {
		return
	}
	op, ok := s.restOp(w, r, id)
	if !ok {
		return
	}
	ts, err := clock.Parse(body.HLC)
	if err != nil {
		s.fail(w, r, core.Errorf(core.CodeBadRequest, "hlc: %v", err))
		return
	}
	if body.Base != nil {
		op.Base, op.NoBase = *body.Base, false
	}
	op.HLC, op.Ops = ts, body.Ops
	s.write(w, r, k, id, op)
}

func (s *Server) deleteDoc(w http.ResponseWriter, r *http.Request, k core.Key, id auth.Identity) {
	op, ok := s.restOp(w, r, id)
	if !ok {
		return
	}
	op.Delete = true
	s.write(w, r, k, id, op)
}

// restOp reads the headers every REST write understands: If-Match /
// If-None-Match preconditions (If-Match's version is also the write's base;
// without it the write names no base) and X-Client-ID / X-Op-ID for
// idempotent retries. With authentication the client id is bound to the
// caller's subject (auth.ClientID); the response names it in X-Client-ID.
func (s *Server) restOp(w http.ResponseWriter, r *http.Request, id auth.Identity) (core.Op, bool) {
	op := core.Op{Subject: id.Subject, Roles: id.Roles}
	if im := r.Header.Get("If-Match"); im != "" {
		v, err := strconv.ParseInt(strings.Trim(strings.TrimPrefix(im, "W/"), `"`), 10, 64)
		if err != nil || v < 1 {
			s.fail(w, r, core.Errorf(core.CodeBadRequest, "If-Match %q: want a version ETag such as \"3\"", im))
			return op, false
		}
		// The version the writer read is also what it based the write on.
		op.IfVersion, op.Base = v, v
	}
	if r.Header.Get("If-None-Match") == "*" {
		op.IfVersion, op.Base = -1, 0
	}
	op.NoBase = op.IfVersion <= 0
	requested := r.Header.Get("X-Client-ID")
	if len(requested) > 128 {
		s.fail(w, r, core.Errorf(core.CodeBadRequest, "X-Client-ID longer than 128 bytes"))
		return op, false
	}
	op.ClientID = auth.ClientID(id, requested)
	if op.ClientID != "" {
		w.Header().Set("X-Client-ID", op.ClientID)
	}
	if v := r.Header.Get("X-Op-ID"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil || n == 0 || op.ClientID == "" {
			s.fail(w, r, core.Errorf(core.CodeBadRequest, "X-Op-ID must be a positive integer and comes with X-Client-ID"))
			return op, false
		}
		op.OpID = n
	}
	return op, true
}

// write submits op and answers with its outcome. A refusal is redacted to
// what the caller may read of the document (auth.Policy.RedactIn).
func (s *Server) write(w http.ResponseWriter, r *http.Request, k core.Key, id auth.Identity, op core.Op) {
	res, err := s.Engine.Do(r.Context(), k, op)
	if err != nil {
		s.fail(w, r, s.Access.Policy.RedactIn(id, k.Collection, s.viewNow(r, k, id), err))
		return
	}
	status := http.StatusOK
	resp := docResponse{Doc: k.String(), Version: res.Version, Dup: res.Dup}
	if res.Change != nil {
		resp.Deleted, resp.Created = res.Change.Deleted, res.Change.Created
		if res.Change.Created {
			status = http.StatusCreated
		}
	}
	w.Header().Set("ETag", etagOf(res.Version))
	writeJSON(w, status, resp)
}

type changesResponse struct {
	Doc      string         `json:"doc"`
	Version  int64          `json:"version"`
	Changes  []core.Change  `json:"changes"`
	Snapshot map[string]any `json:"snapshot,omitempty"`
	Deleted  bool           `json:"deleted,omitempty"`
}

// serveChanges answers GET .../changes?since=v: the deltas after v, or a
// snapshot when the log no longer reaches back to v+1.
func (s *Server) serveChanges(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		s.fail(w, r, core.Errorf(core.CodeMethodNotAllowed, "only GET is served on changes"))
		return
	}
	k, err := core.NewKey(r.PathValue("coll"), r.PathValue("id"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	id, err := s.identify(r)
	if err == nil {
		err = s.Access.Policy.CanRead(id, k.Collection)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	since, err := strconv.ParseInt(r.URL.Query().Get("since"), 10, 64)
	if err != nil || since < 0 {
		s.fail(w, r, core.Errorf(core.CodeBadRequest, "since must be a version >= 0"))
		return
	}
	stored, err := s.Engine.Load(r.Context(), k)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if stored.Doc == nil {
		s.fail(w, r, core.Errorf(core.CodeNotFound, "document %s not found", k))
		return
	}
	cur := stored.Doc.Version
	view := s.Access.Policy.View(id, k.Collection, stored.Doc.Data())
	if view.Denied {
		s.fail(w, r, notReadable(k))
		return
	}
	resp := changesResponse{Doc: k.String(), Version: cur, Changes: []core.Change{}}
	const maxChanges = 1000
	switch {
	case since >= cur:
		if since > cur {
			resp.Snapshot, resp.Deleted = stored.Doc.Data(), stored.Doc.Deleted
		}
	case since+1 >= max(stored.Doc.LogStart, 1):
		// Deltas whenever the log still holds since+1 (for since 0: while
		// it still starts at version 1).
		to := min(cur, since+maxChanges)
		cs, err := s.Engine.Changes(r.Context(), k, since+1, to)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		// The changes are shown through the current view, which is the
		// view of each of them unless one changed a field the rules read.
		if int64(len(cs)) == to-since && !s.Access.Policy.Touches(k.Collection, cs...) {
			for i := range cs {
				cs[i].Ops = view.Ops(cs[i].Ops)
			}
			resp.Changes = cs
			resp.Version = to
			break
		}
		fallthrough
	default:
		resp.Snapshot, resp.Deleted = stored.Doc.Data(), stored.Doc.Deleted
	}
	resp.Snapshot = view.Data(resp.Snapshot)
	w.Header().Set("ETag", etagOf(resp.Version))
	writeJSON(w, http.StatusOK, resp)
}

type listItem struct {
	ID      string         `json:"id"`
	Version int64          `json:"version"`
	Data    map[string]any `json:"data"`
}

type listResponse struct {
	Collection string     `json:"collection"`
	Items      []listItem `json:"items"`
	Next       string     `json:"next,omitempty"`
}

// serveList pages through a collection: ?limit=1..500&cursor=<next>.
func (s *Server) serveList(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		s.fail(w, r, core.Errorf(core.CodeMethodNotAllowed, "only GET is served on collections"))
		return
	}
	coll, id, ok := s.collectionReader(w, r)
	if !ok {
		return
	}
	limit := 50
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxListPage {
			s.fail(w, r, core.Errorf(core.CodeBadRequest, "limit must be 1..%d", maxListPage))
			return
		}
		limit = n
	}
	items, next, err := s.listPage(r.Context(), coll, r.URL.Query().Get("cursor"), limit, id)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, listResponse{Collection: coll, Items: items, Next: next})
}

// maxListPage is the largest page of a collection listing.
const maxListPage = 500

// listPage reads the page of coll from cursor on as id may see it: the
// documents it may read, each as its read rules show it (so a page may hold
// fewer than limit items), and the cursor of the next page.
//
// A store's cursor may name the last id of the page it ends (daprstore's
// does), so under read rules the cursor handed out always comes from a page
// that ends with a listed document: a page ending with documents the caller
// may not read is read again up to its last listed one, and a page listing
// none is passed over (reading on in pages of maxListPage).
func (s *Server) listPage(ctx context.Context, coll, cursor string, limit int, id auth.Identity) ([]listItem, string, error) {
	rules := s.Access.Policy.Rules(coll)
	size := limit
	for {
		page, err := s.Lister.List(ctx, coll, cursor, size)
		if err != nil {
			return nil, "", err
		}
		docs, err := s.Lister.Documents(ctx, coll, page.IDs)
		if err != nil {
			return nil, "", err
		}
		items := make([]listItem, 0, min(len(docs), limit))
		full := false // limit items, and documents left unlisted after them
		for _, d := range docs {
			if len(items) == limit {
				full = true
				break
			}
			if !d.Exists() {
				continue
			}
			if view := s.Access.Policy.View(id, coll, d.Data()); !view.Denied {
				items = append(items, listItem{ID: d.Key.ID, Version: d.Version, Data: view.Data(d.Data())})
			}
		}
		if !rules {
			return items, page.Next, nil
		}
		if len(items) == 0 {
			if page.Next == "" {
				return items, "", nil
			}
			cursor, size = page.Next, maxListPage // stays on the server
			continue
		}
		last := items[len(items)-1].ID
		n := slices.Index(page.IDs, last) + 1
		if n == len(page.IDs) || page.Next == "" && !full {
			return items, page.Next, nil
		}
		cut, err := s.Lister.List(ctx, coll, cursor, n)
		if err != nil {
			return nil, "", err
		}
		if len(cut.IDs) == n && cut.IDs[n-1] == last {
			return items, cut.Next, nil
		}
		// The collection changed between the two reads: read the page again.
	}
}

// collectionReader checks the collection named in the path and that the
// caller may read it; on a problem it answers the request itself and
// returns false.
func (s *Server) collectionReader(w http.ResponseWriter, r *http.Request) (string, auth.Identity, bool) {
	coll := r.PathValue("coll")
	if !core.ValidCollection(coll) {
		s.fail(w, r, core.Errorf(core.CodeInvalidName, "collection name %q: want [a-z][a-z0-9_-]{0,63}", coll))
		return "", auth.Identity{}, false
	}
	id, err := s.identify(r)
	if err == nil {
		err = s.Access.Policy.CanRead(id, coll)
	}
	if err != nil {
		s.fail(w, r, err)
		return "", auth.Identity{}, false
	}
	return coll, id, true
}

// decodeBody reads a JSON body within the size limit into v. It answers the
// request itself and returns false on any problem.
func (s *Server) decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || (mt != "application/json" && !strings.HasSuffix(mt, "+json")) {
			s.fail(w, r, core.Errorf(core.CodeUnsupportedMedia, "Content-Type %q: want application/json", ct))
			return false
		}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.MaxBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			s.fail(w, r, core.Errorf(core.CodeTooLarge, "body over %d bytes", s.MaxBody))
			return false
		}
		s.fail(w, r, core.Errorf(core.CodeBadRequest, "reading body: %v", err))
		return false
	}
	if err := protocol.CheckDepth(body, protocol.MaxDepth); err != nil {
		s.fail(w, r, err)
		return false
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		s.fail(w, r, core.Errorf(core.CodeBadRequest, "malformed JSON body: %v", err))
		return false
	}
	if dec.More() {
		s.fail(w, r, core.Errorf(core.CodeBadRequest, "trailing data after the JSON body"))
		return false
	}
	return true
}

// viewNow is what id may see of the stored document k now; a document that
// cannot be read counts as hidden.
func (s *Server) viewNow(r *http.Request, k core.Key, id auth.Identity) collections.View {
	if !s.Access.Policy.Rules(k.Collection) {
		return collections.View{}
	}
	stored, err := s.Engine.Load(r.Context(), k)
	if err != nil {
		return collections.DeniedView
	}
	return s.Access.Policy.DocView(id, k.Collection, stored.Doc)
}

func etagOf(v int64) string { return `"` + strconv.FormatInt(v, 10) + `"` }
