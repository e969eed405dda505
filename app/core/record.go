package core

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"

	"github.com/open-autoglm/autoglm/app/clock"
	"github.com/open-autoglm/autoglm/app/internal/errcode"
	"github.com/open-autoglm/autoglm/app/internal/jsonvalue"
	"github.com/open-autoglm/autoglm/app/merge"
)

// The stored document (docs/operations.md, "Stored documents").
//
// Record is the persistence contract: what the engine hands to the store
// ports is a *Document, and every adapter writes and reads it as the JSON of
// its Record (EncodeDocument, DecodeDocument). The record's field names and
// encodings are fixed here, apart from merge's and the rest of core's types,
// so those can change without changing what is stored; a change to the
// stored form is a new RecordFormat.

// RecordFormat is the format version of the records this code writes, and
// the newest it reads. Records written before the format was versioned
// carry none and are format 1.
const RecordFormat = 1

// ErrRecordFormat: a stored document is in a format newer than this replica
// reads (a newer replica wrote it). It is refused rather than misread; its
// wire code is storage_format.
var ErrRecordFormat = errcode.New(string(CodeStorageFormat), "stored document is in a newer format than this replica reads")

// Record is a document as stored.
type Record struct {
	// Format is the record's format version; 0 (absent) is format 1.
	Format  int          `json:"fmt"`
	Version int64        `json:"v"`
	Deleted bool         `json:"del,omitempty"`
	State   *StateRecord `json:"state"`
	// Idem, Gone and Horizon are the idempotency records (ClientOps,
	// GoneClients), each in its compact encoding.
	Idem     map[string]*ClientOps `json:"idem,omitempty"`
	Gone     GoneClients           `json:"idem_gone,omitempty"`
	Horizon  int64                 `json:"idem_horizon,omitempty"`
	Updated  clock.Timestamp       `json:"hlc"`
	LogStart int64                 `json:"log_start,omitempty"`
	// Tail holds the latest commit's changes, as the op log stores them.
	Tail []Change `json:"tail,omitempty"`
	// Clients holds the idempotency marks of records written before Idem
	// (the highest op id of each client). It is read, never written.
	Clients map[string]legacyMark `json:"clients,omitempty"`
}

// StateRecord is a document's mergeable state as stored (merge.Doc).
type StateRecord struct {
	// Data is the document's JSON data, including the reserved keys
	// merge.ConflictsKey and merge.TextKey, whose layout is part of the
	// format.
	Data    map[string]any                         `json:"data"`
	Stamps  StampsRecord                           `json:"stamps,omitempty"`
	Elems   map[string]map[string]map[string]int64 `json:"elems,omitempty"`
	TextDel map[string]int64                       `json:"textdel,omitempty"`
}

// StampsRecord is a document's stamps (merge.Doc.Stamps) as stored: an
// object of path → StampRecord. It is written straight from merge's map:
// every commit writes one stamp per field.
type StampsRecord map[string]merge.Stamp

// StampRecord is a merge.Stamp as stored: ["hlc", version], or
// ["hlc", version, "author"] when the author is not the HLC's node. Records
// of the first format may hold a bare "hlc" string (version 0).
type StampRecord struct {
	HLC clock.Timestamp
	By  string
	V   int64
}

// legacyMark is the idempotency mark of the records written before Idem:
// the highest op id of a client and the version it produced.
type legacyMark struct {
	OpID    uint64 `json:"op"`
	Version int64  `json:"v"`
}

// RecordOf returns d's record (nil for nil, stored as JSON null, which
// reads back as an empty document). It shares d's maps and slices.
func RecordOf(d *Document) *Record {
	if d == nil {
		return nil
	}
	r := &Record{Format: RecordFormat, Version: d.Version, Deleted: d.Deleted, Idem: d.Idem, Gone: d.Gone,
		Horizon: d.Horizon, Updated: d.Updated, LogStart: d.LogStart, Tail: d.Tail}
	if s := d.State; s != nil {
		r.State = &StateRecord{Data: s.Data, Stamps: s.Stamps, Elems: s.Elems, TextDel: s.TextDel}
	}
	return r
}

// Document returns the document r records (without its Key), or an error
// wrapping ErrRecordFormat when r is in a format newer than RecordFormat.
// The idempotency marks of the first records become records: the mark's
// own op is remembered with its version and unknown content, and every
// lower id is beyond the window, since whether it was applied is not known.
func (r *Record) Document() (*Document, error) {
	if r.Format < 0 || r.Format > RecordFormat {
		return nil, fmt.Errorf("%w: format %d, this replica reads up to %d", ErrRecordFormat, r.Format, RecordFormat)
	}
	d := &Document{Version: r.Version, Deleted: r.Deleted, Idem: r.Idem, Gone: r.Gone, Horizon: r.Horizon,
		Updated: r.Updated, LogStart: r.LogStart, Tail: r.Tail}
	if s := r.State; s != nil {
		d.State = &merge.Doc{Data: s.Data, Stamps: s.Stamps, Elems: s.Elems, TextDel: s.TextDel}
	}
	for id, m := range r.Clients {
		if _, ok := d.Idem[id]; ok || m.OpID == 0 {
			continue
		}
		if d.Idem == nil {
			d.Idem = map[string]*ClientOps{}
		}
		// When the client last wrote is not known; the document's last write
		// is the closest bound.
		d.Idem[id] = &ClientOps{Floor: m.OpID - 1, Recent: []OpRecord{{OpID: m.OpID, Version: m.Version}}, Last: d.Updated.Wall}
	}
	return d, nil
}

// EncodeDocument returns the stored form of d: the JSON of its Record.
func EncodeDocument(d *Document) ([]byte, error) { return RecordOf(d).appendJSON(nil) }

// EncodeDocumentSized is EncodeDocument that also returns StateSize(d.State),
// measured in the same pass: a writer that checks a document's size and
// then stores it encodes it once. On an error the bytes are nil.
func EncodeDocumentSized(d *Document) ([]byte, int, error) {
	return RecordOf(d).appendSized(nil)
}

// DecodeDocument reads a stored document written in any format up to
// RecordFormat (errors wrapping ErrRecordFormat for a newer one). The
// document's Key is left for the caller, who knows where it was stored.
func DecodeDocument(b []byte) (*Document, error) {
	var r Record
	if err := json.Unmarshal(b, &r); err != nil {
		// A newer format may not fit this one's fields at all: its
		// version, when it can be read, says why.
		var v struct {
			Format int `json:"fmt"`
		}
		if json.Unmarshal(b, &v) == nil && v.Format > RecordFormat {
			return (&Record{Format: v.Format}).Document()
		}
		return nil, err
	}
	return r.Document()
}

// StateSize is the size of s as stored: what a collection's max_doc_bytes
// counts.
func StateSize(s *merge.Doc) int {
	b, err := RecordOf(&Document{State: s}).State.appendJSON(nil)
	if err != nil {
		return 0
	}
	return len(b)
}

// appendJSON appends r's JSON exactly as encoding/json writes a Record
// (TestRecordJSONIsEncodingJSON): the state, which is most of a record and
// is written on every commit, without reflection.
func (r *Record) appendJSON(b []byte) ([]byte, error) {
	b, _, err := r.appendSized(b)
	return b, err
}

// appendSized is appendJSON that also returns the length of the state's
// JSON within the record (StateSize).
func (r *Record) appendSized(b []byte) ([]byte, int, error) {
	if r == nil {
		return append(b, "null"...), len("null"), nil
	}
	b = append(b, `{"fmt":`...)
	b = strconv.AppendInt(b, int64(r.Format), 10)
	b = append(b, `,"v":`...)
	b = strconv.AppendInt(b, r.Version, 10)
	if r.Deleted {
		b = append(b, `,"del":true`...)
	}
	b = append(b, `,"state":`...)
	start := len(b)
	b, err := r.State.appendJSON(b)
	if err != nil {
		return nil, 0, err
	}
	state := len(b) - start
	if len(r.Idem) > 0 {
		b = append(b, `,"idem":`...)
		b, _ = jsonvalue.AppendObject(b, r.Idem, func(b []byte, c *ClientOps) ([]byte, error) {
			if c == nil {
				return append(b, "null"...), nil
			}
			return c.appendJSON(b), nil
		})
	}
	if len(r.Gone) > 0 {
		b = append(b, `,"idem_gone":`...)
		b = r.Gone.appendJSON(b)
	}
	if r.Horizon != 0 {
		b = append(b, `,"idem_horizon":`...)
		b = strconv.AppendInt(b, r.Horizon, 10)
	}
	b = append(b, `,"hlc":`...)
	b = jsonvalue.AppendString(b, r.Updated.String())
	if r.LogStart != 0 {
		b = append(b, `,"log_start":`...)
		b = strconv.AppendInt(b, r.LogStart, 10)
	}
	if len(r.Tail) > 0 {
		b = append(b, `,"tail":`...)
		if b, err = appendChanges(b, r.Tail); err != nil {
			return nil, 0, err
		}
	}
	b, err = appendRest(b, field{"clients", len(r.Clients) > 0, r.Clients})
	return b, state, err
}

// field is a record field left to encoding/json (small, or rarely set);
// set is false where omitempty leaves it out.
type field struct {
	name string
	set  bool
	v    any
}

// appendRest appends ,"name": and the value of each field that is set, as
// encoding/json writes them, and closes the object.
func appendRest(b []byte, fields ...field) ([]byte, error) {
	for _, f := range fields {
		if !f.set {
			continue
		}
		j, err := json.Marshal(f.v)
		if err != nil {
			return nil, err
		}
		b = append(b, ',', '"')
		b = append(b, f.name...)
		b = append(b, '"', ':')
		b = append(b, j...)
	}
	return append(b, '}'), nil
}

// appendJSON appends s's JSON as encoding/json writes a StateRecord.
func (s *StateRecord) appendJSON(b []byte) ([]byte, error) {
	if s == nil {
		return append(b, "null"...), nil
	}
	b = slices.Grow(b, 64*(len(s.Data)+len(s.Stamps)))
	b = append(b, `{"data":`...)
	b, err := jsonvalue.AppendObject(b, s.Data, jsonvalue.Append)
	if err != nil {
		return nil, err
	}
	if len(s.Stamps) > 0 {
		b = append(b, `,"stamps":`...)
		if b, err = s.Stamps.appendJSON(b); err != nil {
			return nil, err
		}
	}
	return appendRest(b, field{"elems", len(s.Elems) > 0, s.Elems}, field{"textdel", len(s.TextDel) > 0, s.TextDel})
}

// MarshalJSON writes the stored form (EncodeDocument).
func (d Document) MarshalJSON() ([]byte, error) { return EncodeDocument(&d) }

// UnmarshalJSON reads the stored form (DecodeDocument).
func (d *Document) UnmarshalJSON(b []byte) error {
	out, err := DecodeDocument(b)
	if err != nil {
		return err
	}
	*d = *out
	return nil
}

// MarshalJSON writes the object in key order, as encoding/json writes a
// map, each stamp in its compact form, without a map of StampRecord in
// between.
func (m StampsRecord) MarshalJSON() ([]byte, error) { return m.appendJSON(nil) }

func (m StampsRecord) appendJSON(b []byte) ([]byte, error) {
	return jsonvalue.AppendObject(b, m, func(b []byte, s merge.Stamp) ([]byte, error) { return StampRecord(s).appendJSON(b) })
}

// UnmarshalJSON reads an object of stamps; each stamp is read by
// StampRecord.
func (m *StampsRecord) UnmarshalJSON(b []byte) error {
	var stamps map[string]StampRecord
	if err := json.Unmarshal(b, &stamps); err != nil {
		return fmt.Errorf("stamps: %w", err)
	}
	if stamps == nil {
		*m = nil
		return nil
	}
	out := make(StampsRecord, len(stamps))
	for p, s := range stamps {
		out[p] = merge.Stamp(s)
	}
	*m = out
	return nil
}

// MarshalJSON writes the compact form.
func (s StampRecord) MarshalJSON() ([]byte, error) { return s.appendJSON(nil) }

// appendJSON appends the compact form to b: ["hlc", version], with the
// author third when it is not the HLC's node.
func (s StampRecord) appendJSON(b []byte) ([]byte, error) {
	b = append(b, '[')
	b = jsonvalue.AppendString(b, s.HLC.String())
	b = append(b, ',')
	b = strconv.AppendInt(b, s.V, 10)
	if s.By != s.HLC.Node {
		b = append(b, ',')
		b = jsonvalue.AppendString(b, s.By)
	}
	return append(b, ']'), nil
}

// UnmarshalJSON reads the array form, or a bare HLC string (a stamp written
// before stamps carried versions).
func (s *StampRecord) UnmarshalJSON(b []byte) error {
	if out, ok := parseStamp(b); ok {
		*s = out
		return nil
	}
	var str string
	if json.Unmarshal(b, &str) == nil {
		ts, err := clock.Parse(str)
		if err != nil {
			return err
		}
		*s = StampRecord{HLC: ts, By: ts.Node}
		return nil
	}
	var arr []json.RawMessage
	if err := json.Unmarshal(b, &arr); err != nil || len(arr) < 2 || len(arr) > 3 {
		return fmt.Errorf("stamp %s: want [hlc, version] or [hlc, version, author]", b)
	}
	var out StampRecord
	if err := json.Unmarshal(arr[0], &str); err != nil {
		return fmt.Errorf("stamp %s: %w", b, err)
	}
	ts, err := clock.Parse(str)
	if err != nil {
		return err
	}
	out.HLC, out.By = ts, ts.Node
	if err := json.Unmarshal(arr[1], &out.V); err != nil {
		return fmt.Errorf("stamp %s: %w", b, err)
	}
	if len(arr) == 3 {
		if err := json.Unmarshal(arr[2], &out.By); err != nil {
			return fmt.Errorf("stamp %s: %w", b, err)
		}
	}
	*s = out
	return nil
}

// parseStamp reads the array form ["hlc",v] or ["hlc",v,"by"] written by
// MarshalJSON when it holds plain strings; anything else (escapes,
// whitespace, the old bare-string form) is left to the general decoder.
func parseStamp(b []byte) (StampRecord, bool) {
	str := func(b []byte) (string, []byte, bool) {
		if len(b) == 0 || b[0] != '"' {
			return "", nil, false
		}
		for i := 1; i < len(b); i++ {
			switch c := b[i]; {
			case c == '"':
				return string(b[1:i]), b[i+1:], true
			case c == '\\' || c < 0x20 || c > 0x7e:
				return "", nil, false
			}
		}
		return "", nil, false
	}
	if len(b) < 2 || b[0] != '[' || b[len(b)-1] != ']' {
		return StampRecord{}, false
	}
	hlc, rest, ok := str(b[1:])
	if !ok || len(rest) == 0 || rest[0] != ',' {
		return StampRecord{}, false
	}
	rest = rest[1:]
	n := 0
	for n < len(rest) && (rest[n] >= '0' && rest[n] <= '9' || n == 0 && rest[n] == '-') {
		n++
	}
	v, err := strconv.ParseInt(string(rest[:n]), 10, 64)
	if err != nil {
		return StampRecord{}, false
	}
	ts, err := clock.Parse(hlc)
	if err != nil {
		return StampRecord{}, false
	}
	out := StampRecord{HLC: ts, By: ts.Node, V: v}
	rest = rest[n:]
	switch {
	case len(rest) == 1: // "]"
		return out, true
	case rest[0] == ',':
		by, tail, ok := str(rest[1:])
		if !ok || len(tail) != 1 {
			return StampRecord{}, false
		}
		out.By = by
		return out, true
	}
	return StampRecord{}, false
}

// appendChanges appends cs's JSON exactly as encoding/json writes a
// []Change (TestChangeJSONIsEncodingJSON): the document's tail, written
// on every commit.
func appendChanges(b []byte, cs []Change) ([]byte, error) {
	if cs == nil {
		return append(b, "null"...), nil
	}
	b = append(b, '[')
	for i := range cs {
		if i > 0 {
			b = append(b, ',')
		}
		var err error
		if b, err = cs[i].appendJSON(b); err != nil {
			return nil, err
		}
	}
	return append(b, ']'), nil
}

// appendJSON appends c's JSON exactly as encoding/json writes a Change.
func (c *Change) appendJSON(b []byte) ([]byte, error) {
	b = append(b, `{"doc":`...)
	b = jsonvalue.AppendString(b, c.Doc)
	b = append(b, `,"v":`...)
	b = strconv.AppendInt(b, c.Version, 10)
	b = append(b, `,"pv":`...)
	b = strconv.AppendInt(b, c.Prev, 10)
	if len(c.Ops) > 0 {
		b = append(b, `,"ops":[`...)
		for i, o := range c.Ops {
			if i > 0 {
				b = append(b, ',')
			}
			var err error
			if b, err = appendFieldOp(b, o); err != nil {
				return nil, err
			}
		}
		b = append(b, ']')
	}
	if c.Author != "" {
		b = append(b, `,"by":`...)
		b = jsonvalue.AppendString(b, c.Author)
	}
	if c.OpID != 0 {
		b = append(b, `,"op":`...)
		b = strconv.AppendUint(b, c.OpID, 10)
	}
	b = append(b, `,"hlc":`...)
	b = jsonvalue.AppendString(b, c.HLC.String())
	if c.Deleted {
		b = append(b, `,"del":true`...)
	}
	if c.Created {
		b = append(b, `,"new":true`...)
	}
	if c.Pull {
		b = append(b, `,"pull":true`...)
	}
	return append(b, '}'), nil
}

// appendFieldOp appends o's JSON exactly as encoding/json writes a
// merge.FieldOp.
func appendFieldOp(b []byte, o merge.FieldOp) ([]byte, error) {
	b = append(b, `{"op":`...)
	b = jsonvalue.AppendString(b, string(o.Op))
	b = append(b, `,"path":`...)
	b = jsonvalue.AppendString(b, o.Path)
	if len(o.Value) > 0 {
		b = append(b, `,"value":`...)
		var err error
		if b, err = jsonvalue.AppendRaw(b, o.Value); err != nil {
			return nil, err
		}
	}
	return append(b, '}'), nil
}
