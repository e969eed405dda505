// Package daprquery serves queries through the Dapr state query API
// (QueryStateAlpha1) on state stores that have one: state.postgresql (v1).
//
// The query API filters on the JSON of stored values, so documents must be
// stored as JSON, not as opaque bytes. Dapr stores a value as JSON only when
// it arrives as JSON: through the HTTP state API, or through gRPC SaveState
// with contentType application/json; a gRPC transaction always stores bytes
// (base64 in a jsonb string). Transport is the state client of the store
// on such profiles: it sends transactions over daprd's HTTP API with the
// values as JSON, and marks every document with its app and collection
// ("_coll": "<app>/<collection>"), since the query API can filter only on
// the value, never on the key, and sees every app's rows of the table.
//
// A collection is served by the query API only once every one of its
// documents is known to be stored as JSON: its marker key
// "<collection>:_query" exists. Engine writes the marker after rewriting
// the collection's documents as JSON (a backfill, once per collection); a
// transaction the transport cannot send as JSON (a value PostgreSQL's jsonb
// refuses, or one carrying outbox metadata) deletes the marker in the same
// transaction, so the collection falls back to the in-memory index until
// the next backfill.
package daprquery

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	dapr "github.com/dapr/go-sdk/client"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/open-autoglm/autoglm/app/daprstore"
	"github.com/open-autoglm/autoglm/app/internal/daprconn"
)

// CollField is the value field naming a document's app and collection.
const CollField = "_coll"

// markerID is the reserved id of a collection's marker key (document ids
// never start with '_').
const markerID = "_query"

// MarkerKey is the key whose presence says every document of coll is
// stored as JSON.
func MarkerKey(coll string) string { return coll + ":" + markerID }

// docColl returns the collection of a document key ("<coll>:<id>"): one
// ':' and an id that is not reserved.
func docColl(key string) (string, bool) {
	coll, id, ok := strings.Cut(key, ":")
	if !ok || id == "" || strings.Contains(id, ":") || id[0] == '_' {
		return "", false
	}
	return coll, true
}

// Transport is a daprstore.Client whose transactions store values as JSON.
type Transport struct {
	daprstore.Client
	// HTTP is daprd's HTTP API base URL, e.g. http://127.0.0.1:3500.
	HTTP string
	// Token is the DAPR_API_TOKEN ("" when none).
	Token string
	// App is this service's Dapr app id.
	App string
	// JSON stores documents as JSON (NewTransport sets it). Without it the
	// transactions go over gRPC as bytes, still dropping the markers of
	// the collections they write, so a later switch to JSON never trusts
	// a marker older than a document stored as bytes.
	JSON bool
	// HTTPClient defaults to a client with a 30 s timeout.
	HTTPClient *http.Client

	mu   sync.Mutex
	json map[string]bool // per store: its transactions go as JSON
}

// storesJSON reports whether store is state.postgresql v1, whose query API
// reads JSON values (asked once from the sidecar's metadata API). On any
// other store the transport passes transactions through unchanged.
func (t *Transport) storesJSON(ctx context.Context, store string) (bool, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if v, ok := t.json[store]; ok {
		return v, nil
	}
	md, err := t.Client.GetMetadata(ctx)
	if err != nil {
		return false, err
	}
	c := daprconn.Component(md, store)
	if c == nil {
		return false, fmt.Errorf("state store %q is not registered with the sidecar", store)
	}
	v := postgresV1(c)
	if t.json == nil {
		t.json = map[string]bool{}
	}
	t.json[store] = v
	return v, nil
}

// postgresV1 reports whether c is the PostgreSQL state store with the
// query API (v2 has none).
func postgresV1(c *dapr.MetadataRegisteredComponents) bool {
	return c.Type == "state.postgresql" && (c.Version == "v1" || c.Version == "")
}

// NewTransport returns a Transport over c.
func NewTransport(c daprstore.Client, httpURL, token, app string) *Transport {
	return &Transport{Client: c, HTTP: strings.TrimRight(httpURL, "/"), Token: token, App: app, JSON: true,
		HTTPClient: &http.Client{Timeout: 30 * time.Second}}
}

// Tag returns body (a JSON object) with the document's "_coll" field first.
// Decoders of core.Document ignore the field.
func (t *Transport) Tag(coll string, body []byte) ([]byte, bool) {
	b := bytes.TrimLeft(body, " \t\r\n")
	if len(b) < 2 || b[0] != '{' {
		return nil, false
	}
	tag, _ := json.Marshal(t.App + "/" + coll)
	out := make([]byte, 0, len(b)+len(tag)+16)
	out = append(out, `{"`+CollField+`":`...)
	out = append(out, tag...)
	rest := bytes.TrimLeft(b[1:], " \t\r\n")
	if len(rest) > 0 && rest[0] != '}' {
		out = append(out, ',')
	}
	return append(out, rest...), true
}

// jsonable reports whether b can be stored in a jsonb column through
// daprd's HTTP API unchanged: valid JSON without a NUL character
// (\u0000), which jsonb refuses, and without an integer beyond 2^53, which
// daprd (decoding the request's values as float64) would round.
func jsonable(b []byte) bool {
	return json.Valid(b) && !bytes.Contains(b, []byte(`\u0000`)) && exactNumbers(b)
}

// exactNumbers reports whether every integer literal of the JSON text b
// (outside strings) is at most 2^53 in magnitude. Literals too long for a
// uint64 are float64 values (the service's integers are at most 64 bits),
// which survive the round trip.
func exactNumbers(b []byte) bool {
	inStr := false
	for i := 0; i < len(b); i++ {
		c := b[i]
		switch {
		case inStr:
			if c == '\\' {
				i++
			} else if c == '"' {
				inStr = false
			}
		case c == '"':
			inStr = true
		case c >= '0' && c <= '9':
			j := i
			for j < len(b) && b[j] >= '0' && b[j] <= '9' {
				j++
			}
			integer := j == len(b) || (b[j] != '.' && b[j] != 'e' && b[j] != 'E')
			if integer && j-i >= 16 {
				if n, err := strconv.ParseUint(string(b[i:j]), 10, 64); err == nil && n > 1<<53 {
					return false
				}
			}
			for j < len(b) && strings.IndexByte("0123456789.eE+-", b[j]) >= 0 {
				j++
			}
			i = j - 1
		}
	}
	return true
}

type httpOp struct {
	Operation string      `json:"operation"`
	Request   httpRequest `json:"request"`
}

type httpRequest struct {
	Key      string            `json:"key"`
	Value    json.RawMessage   `json:"value,omitempty"`
	ETag     string            `json:"etag,omitempty"`
	Metadata map[string]string `json:"metadata,omitempty"`
	Options  *httpOptions      `json:"options,omitempty"`
}

type httpOptions struct {
	Concurrency string `json:"concurrency,omitempty"`
	Consistency string `json:"consistency,omitempty"`
}

// ExecuteStateTransaction runs ops as one transaction. With no metadata
// and every value storable as JSON, it goes over the HTTP API with the
// values as JSON and the documents tagged; otherwise over gRPC as bytes,
// with the markers of the collections whose documents it writes deleted in
// the same transaction.
func (t *Transport) ExecuteStateTransaction(ctx context.Context, store string, meta map[string]string, ops []*dapr.StateOperation) error {
	// Not knowing the store, the transport fails the transaction rather
	// than store a document as bytes without dropping its marker.
	if ok, err := t.storesJSON(ctx, store); err != nil {
		return status.Error(codes.Unavailable, "state store metadata: "+err.Error())
	} else if !ok {
		return t.Client.ExecuteStateTransaction(ctx, store, meta, ops)
	}
	out := make([]httpOp, 0, len(ops))
	asJSON := t.JSON && len(meta) == 0
	colls := map[string]bool{}
	for _, op := range ops {
		if op == nil || op.Item == nil {
			continue
		}
		it := op.Item
		coll, isDoc := docColl(it.Key)
		if isDoc && op.Type == dapr.StateOperationTypeUpsert {
			colls[coll] = true
		}
		if !asJSON || len(it.Metadata) > 0 {
			asJSON = false
			continue
		}
		r := httpRequest{Key: it.Key}
		if it.Etag != nil {
			r.ETag = it.Etag.Value
		}
		if o := it.Options; o != nil {
			r.Options = &httpOptions{Concurrency: concurrencyNames[o.Concurrency], Consistency: consistencyNames[o.Consistency]}
		}
		kind := "delete"
		if op.Type == dapr.StateOperationTypeUpsert {
			kind = "upsert"
			v := it.Value
			if isDoc {
				if tagged, ok := t.Tag(coll, v); ok {
					v = tagged
				}
			}
			if !jsonable(v) {
				asJSON = false
				continue
			}
			r.Value = v
		}
		out = append(out, httpOp{Operation: kind, Request: r})
	}
	if asJSON {
		return t.postTransaction(ctx, store, out)
	}
	for coll := range colls {
		ops = append(ops, &dapr.StateOperation{Type: dapr.StateOperationTypeDelete,
			Item: &dapr.SetStateItem{Key: MarkerKey(coll)}})
	}
	return t.Client.ExecuteStateTransaction(ctx, store, meta, ops)
}

// The HTTP API's names of the gRPC options; an unset option has none.
var (
	concurrencyNames = map[dapr.StateConcurrency]string{
		dapr.StateConcurrencyFirstWrite: "first-write", dapr.StateConcurrencyLastWrite: "last-write"}
	consistencyNames = map[dapr.StateConsistency]string{
		dapr.StateConsistencyStrong: "strong", dapr.StateConsistencyEventual: "eventual"}
)

func (t *Transport) postTransaction(ctx context.Context, store string, ops []httpOp) error {
	return daprconn.HTTPTransaction(ctx, t.HTTPClient, t.HTTP, t.Token, store, "state transaction", ops)
}
