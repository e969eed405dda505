// Package core is the domain root of the sync service: documents, operations,
// change summaries, version stamps, the error codes clients see, and the
// narrow ports (Store, Bus) that adapters implement. It does no I/O.
//
// The package is named core rather than sync so it does not shadow the
// standard library's sync package in the code that uses both.
package core

import (
	"context"
	"fmt"
	"regexp"
	"strings"

	"github.com/open-autoglm/autoglm/app/clock"
	"github.com/open-autoglm/autoglm/app/merge"
)

// Key addresses a document: collection/id.
type Key struct {
	Collection string
	ID         string
}

func (k Key) String() string { return k.Collection + "/" + k.ID }

var (
	collectionRe = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,63}$`)
	idRe         = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$`)
)

// ParseKey reads "collection/id" and validates both names.
func ParseKey(s string) (Key, error) {
	c, id, ok := strings.Cut(s, "/")
	if !ok {
		return Key{}, Errorf(CodeInvalidName, "document %q is not collection/id", s)
	}
	return NewKey(c, id)
}

// NewKey validates a collection name and a document id. Collections are
// lower-case identifiers; ids are letters, digits and _ . @ - (no ':' or '/',
// which the state-store key layout and URLs reserve).
func NewKey(collection, id string) (Key, error) {
	if !collectionRe.MatchString(collection) {
		return Key{}, Errorf(CodeInvalidName, "collection name %q: want [a-z][a-z0-9_-]{0,63}", collection)
	}
	if !idRe.MatchString(id) || strings.Contains(id, "..") {
		return Key{}, Errorf(CodeInvalidName, "document id %q: want [A-Za-z0-9][A-Za-z0-9_.@-]{0,127}", id)
	}
	return Key{Collection: collection, ID: id}, nil
}

// ValidCollection reports whether name is a valid collection name.
func ValidCollection(name string) bool { return collectionRe.MatchString(name) }

// Op is one client operation on one document. (ClientID, OpID) identifies it,
// so a retried op is applied once (see ClientOps).
type Op struct {
	ClientID string `json:"client"`
	OpID     uint64 `json:"op"`
	Base     int64  `json:"base"` // version the client had when it made the op
	// NoBase marks an op whose writer named no base version (a REST write
	// without "base" or If-Match). It is based on the document as it is
	// when applied, except where a base is required: under strict, and for
	// a manual resolve (docs/conflicts.md, "Writes without a base").
	NoBase bool            `json:"-"`
	HLC    clock.Timestamp `json:"hlc"` // client's stamp; the zero value lets the server stamp it
	Ops    []merge.FieldOp `json:"ops"`
	Delete bool            `json:"delete,omitempty"` // tombstone the document
	// Replace makes the op a whole-document write (REST PUT): top-level
	// fields the op does not set are removed, decided against the document
	// as it is when the op is applied.
	Replace bool `json:"-"`
	// Subject and Roles are the author's identity, for access and
	// workflow rules.
	Subject string   `json:"-"`
	Roles   []string `json:"-"`
	// IfVersion, when set, requires the document to be at exactly this
	// version (REST If-Match); 0 means no precondition. -1 requires that the
	// document does not exist yet (If-None-Match: *).
	IfVersion int64 `json:"-"`
}

// Change is the summary of one accepted op: the delta, never the document.
// It is what the op log stores, what the broadcast carries and what sessions
// deliver.
type Change struct {
	Doc     string          `json:"doc"` // collection/id
	Version int64           `json:"v"`
	Prev    int64           `json:"pv"`
	Ops     []merge.FieldOp `json:"ops,omitempty"`
	Author  string          `json:"by,omitempty"`
	OpID    uint64          `json:"op,omitempty"`
	HLC     clock.Timestamp `json:"hlc"`
	Deleted bool            `json:"del,omitempty"`
	// Created marks the first version after a create (or re-create after a
	// tombstone): clients reset their copy before applying Ops.
	Created bool `json:"new,omitempty"`
	// Pull marks a summary whose ops were left out of a broadcast because
	// they were too large; receivers fetch the change from the op log.
	Pull bool `json:"pull,omitempty"`
	// Fanout, set only while this replica traces the change's delivery,
	// follows it through the queues of the local sessions it was offered
	// to. It never leaves the replica.
	Fanout Fanout `json:"-"`
}

// Fanout follows one change's delivery to the sessions of a replica: each
// session it was offered to calls Done once, when it has handled it.
type Fanout interface {
	Done()
}

// Document is a stored document with its version stamp. It is stored as
// its Record (EncodeDocument, DecodeDocument), which fixes the stored field
// names; its JSON encoding is that record's.
type Document struct {
	Key     Key
	Version int64
	Deleted bool
	State   *merge.Doc
	// Idem is the idempotency record: per client, the ops recently applied
	// (see ClientOps).
	Idem map[string]*ClientOps
	// Gone lists clients whose records were dropped, with their floors
	// (GoneClient); Horizon is the version at which the oldest of them were
	// forgotten altogether (BeyondHorizon). Both are empty on nearly every
	// document.
	Gone    GoneClients
	Horizon int64
	Updated clock.Timestamp
	// LogStart is the lowest version still in the op log; a client behind it
	// needs a snapshot.
	LogStart int64
	// Tail holds the changes of the latest commits, in version order (the
	// engine keeps a few, see engine.tailHasRoom). They are written with
	// the document itself, in the same guarded write, and copied to the
	// op-log keys by a later commit; readers take them from here until
	// then.
	Tail []Change
}

// Data returns the document's plain JSON data.
func (d *Document) Data() map[string]any {
	if d.State == nil {
		return map[string]any{}
	}
	return d.State.Data
}

// Exists reports whether the document has been written and not deleted.
func (d *Document) Exists() bool { return d != nil && d.Version > 0 && !d.Deleted }

// Stored is a document as read from a Store, with the store's ETag that
// guards the next write.
type Stored struct {
	Doc  *Document
	ETag string // empty when the document does not exist yet
}

// Version is the stored document's version (0 when it does not exist).
func (s Stored) Version() int64 {
	if s.Doc == nil {
		return 0
	}
	return s.Doc.Version
}

// Commit is one guarded write of a document at its new version.
//
// The changes of this commit travel inside the document (Doc.Tail), so the
// document and its op-log entries are written atomically by the single
// ETag-guarded write on any state store. Archive holds the tail the
// document had — changes that are already committed — for the op-log keys
// when this commit does not keep it; writing them is correct whether or not
// this commit wins its race, which matters on stores whose transactions do
// not roll back (Redis).
type Commit struct {
	Key      Key
	ETag     string // the ETag read; empty for a create
	Doc      *Document
	Changes  []Change // this commit's changes (the end of Doc.Tail): Doc.Version-len+1 .. Doc.Version
	Archive  []Change // the stored tail, for the op-log keys, when this commit starts a new one
	TrimFrom int64    // delete op-log entries TrimFrom..TrimTo (inclusive); always below the window
	TrimTo   int64
	// IndexAdd / IndexRemove keep the collection listing in step: a create
	// (or re-create after a tombstone) adds the id, a delete removes it.
	IndexAdd    bool
	IndexRemove bool
	// Body is Doc's stored form (EncodeDocument) when the writer has
	// encoded it already; a store encodes Doc itself when it is nil.
	Body []byte
}

// Page is one page of a collection listing.
type Page struct {
	IDs  []string `json:"ids"`
	Next string   `json:"next,omitempty"` // cursor for the following page
}

// Store is the persistence port. Implementations must make Commit atomic and
// fail it with an error wrapping ErrVersionConflict when the ETag no longer
// matches.
type Store interface {
	Load(ctx context.Context, k Key) (Stored, error)
	Commit(ctx context.Context, c Commit) error
	// Changes returns the logged changes from..to (inclusive) in order. A
	// missing entry (trimmed) ends the result early.
	Changes(ctx context.Context, k Key, from, to int64) ([]Change, error)
	List(ctx context.Context, collection, cursor string, limit int) (Page, error)
}

// Lister pages through a collection's ids and reads the documents of a
// page.
type Lister interface {
	List(ctx context.Context, collection, cursor string, limit int) (Page, error)
	Documents(ctx context.Context, collection string, ids []string) ([]*Document, error)
}

// Bus is the broadcast port: it publishes change summaries to every replica.
// Delivery is a hint; the op log is the truth.
type Bus interface {
	Publish(ctx context.Context, changes []Change) error
	PublishPresence(ctx context.Context, p []Presence) error
}

// ChangeKey is a convenience that parses Change.Doc.
func (c Change) Key() (Key, error) { return ParseKey(c.Doc) }

// String renders a change for logs.
func (c Change) String() string { return fmt.Sprintf("%s@%d", c.Doc, c.Version) }

// Presence is ephemeral state of one client on one document (who is there,
// which field has focus, a cursor). It is broadcast, never persisted, and
// expires unless refreshed.
type Presence struct {
	Doc    string `json:"doc"`
	Client string `json:"client"`
	// Subject is the token's subject of the client (empty while
	// authentication is off): who the presence is, as verified.
	Subject string         `json:"sub,omitempty"`
	Session string         `json:"session"`
	Node    string         `json:"node,omitempty"`
	Data    map[string]any `json:"data,omitempty"`
	Gone    bool           `json:"gone,omitempty"`
	// Expires is when the entry lapses unless refreshed (Unix ms).
	Expires int64 `json:"exp,omitempty"`
}
