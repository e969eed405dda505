package core

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"slices"
	"strconv"
)

// Idempotency by exact op identity (docs/protocol.md, "Retries and
// idempotency"). Every document keeps, per client, the ops of that client it
// applied recently — (op id, version, digest of the op's content) — and a
// floor: the highest op id it no longer remembers. For an op (client, id):
//
//   - id remembered, same digest: a retry; answered with its original version.
//   - id remembered, other digest: the id was reused (CodeOpIDReused).
//   - id not remembered and above the floor: never applied; applied now,
//     whatever its order relative to the client's other ops.
//   - id not remembered and at or below the floor: beyond the window
//     (CodeOpExpired); it may or may not have been applied, so it is neither
//     applied again nor answered as a duplicate.
//
// The record is part of the document and written by the same guarded write
// as the change it records.

// Idempotency window limits. They bound the record a document carries on
// every write.
const (
	// IdemPerClient is how many of a client's latest applied ops (by op id)
	// a document remembers: as many as one connection may have in flight,
	// so a client that resends everything after a reconnect is answered
	// for every op.
	IdemPerClient = 256
	// IdemPerDocument bounds the remembered ops of all clients of one
	// document (about 15 KB encoded); past it, the ops with the lowest
	// versions are forgotten.
	IdemPerDocument = 1024
	// IdemClients bounds the clients a document keeps records for; past it,
	// the record of the client that wrote least recently is dropped.
	IdemClients = 256
)

// OpRecord is one applied op as the idempotency record remembers it.
type OpRecord struct {
	OpID    uint64
	Version int64
	// Digest identifies the op's content (OpDigest); 0 means unknown (an op
	// recorded before digests were kept), which matches any content.
	Digest uint64
}

// ClientOps is the idempotency record of one client on one document. It is
// never changed in place once stored: writers build a new one (With).
type ClientOps struct {
	// Floor: op ids at or below it that are not in Recent are beyond the
	// window.
	Floor uint64
	// Recent are the remembered applied ops, in ascending op id, all above
	// Floor.
	Recent []OpRecord
	// Last is when the client last had an op applied here (Unix ms, the
	// replica's clock), for pruning idle clients.
	Last int64
}

// Find returns the remembered op with id.
func (c *ClientOps) Find(id uint64) (OpRecord, bool) {
	if c == nil {
		return OpRecord{}, false
	}
	i, ok := slices.BinarySearchFunc(c.Recent, id, func(r OpRecord, id uint64) int {
		switch {
		case r.OpID < id:
			return -1
		case r.OpID > id:
			return 1
		}
		return 0
	})
	if !ok {
		return OpRecord{}, false
	}
	return c.Recent[i], true
}

// Expired reports whether id is beyond the window: not remembered and at or
// below the floor.
func (c *ClientOps) Expired(id uint64) bool {
	if c == nil || id > c.Floor {
		return false
	}
	_, ok := c.Find(id)
	return !ok
}

// With returns a copy of c (nil: an empty record) that also remembers r,
// applied at wall time now, keeping at most IdemPerClient ops: the lowest
// ids leave first and raise the floor.
func (c *ClientOps) With(r OpRecord, now int64) *ClientOps {
	out := &ClientOps{Last: now}
	if c != nil {
		out.Floor = c.Floor
		out.Last = max(c.Last, now)
		out.Recent = make([]OpRecord, 0, len(c.Recent)+1)
		out.Recent = append(out.Recent, c.Recent...)
	}
	i, _ := slices.BinarySearchFunc(out.Recent, r.OpID, func(e OpRecord, id uint64) int {
		switch {
		case e.OpID < id:
			return -1
		case e.OpID > id:
			return 1
		}
		return 0
	})
	out.Recent = slices.Insert(out.Recent, i, r)
	if n := len(out.Recent) - IdemPerClient; n > 0 {
		out.Floor = max(out.Floor, out.Recent[n-1].OpID)
		out.Recent = slices.Delete(out.Recent, 0, n)
	}
	return out
}

// without returns a copy of c that forgets the op with id (raising the
// floor to it).
func (c *ClientOps) without(id uint64) *ClientOps {
	out := &ClientOps{Floor: max(c.Floor, id), Last: c.Last}
	for _, r := range c.Recent {
		if r.OpID > out.Floor {
			out.Recent = append(out.Recent, r)
		}
	}
	return out
}

// BoundIdem keeps a document's idempotency records within IdemPerDocument
// remembered ops and IdemClients clients, forgetting the oldest first. It
// changes ops (a map the caller owns) but never the records in it.
func BoundIdem(ops map[string]*ClientOps) {
	for len(ops) > IdemClients {
		var drop string
		for id, c := range ops {
			if o := ops[drop]; drop == "" || c.Last < o.Last || (c.Last == o.Last && id < drop) {
				drop = id
			}
		}
		delete(ops, drop)
	}
	n := 0
	for _, c := range ops {
		n += len(c.Recent)
	}
	for ; n > IdemPerDocument; n-- {
		var (
			who    string
			oldest OpRecord
		)
		for id, c := range ops {
			for _, r := range c.Recent {
				if who == "" || r.Version < oldest.Version {
					who, oldest = id, r
				}
			}
		}
		ops[who] = ops[who].without(oldest.OpID)
	}
}

// Encoding: a record is one JSON string, base64url of
//
//	uvarint Floor | uvarint Last | per op: uvarint (id - previous id) |
//	varint (version - previous version) | 8 bytes digest (little endian)
//
// where the first op's "previous" id is Floor and its previous version 0.
// A remembered op costs about 11 bytes before base64.

// MarshalJSON encodes the record compactly.
func (c ClientOps) MarshalJSON() ([]byte, error) {
	b := make([]byte, 0, 2*binary.MaxVarintLen64+len(c.Recent)*12)
	b = binary.AppendUvarint(b, c.Floor)
	b = binary.AppendUvarint(b, uint64(max(c.Last, 0)))
	prevID, prevV := c.Floor, int64(0)
	for _, r := range c.Recent {
		b = binary.AppendUvarint(b, r.OpID-prevID)
		b = binary.AppendVarint(b, r.Version-prevV)
		b = binary.LittleEndian.AppendUint64(b, r.Digest)
		prevID, prevV = r.OpID, r.Version
	}
	return json.Marshal(base64.RawURLEncoding.EncodeToString(b))
}

var errIdemFormat = errors.New("idempotency record: malformed")

// UnmarshalJSON decodes MarshalJSON's encoding.
func (c *ClientOps) UnmarshalJSON(data []byte) error {
	var s string
	if err := json.Unmarshal(data, &s); err != nil {
		return err
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return errIdemFormat
	}
	next := func() (uint64, bool) {
		v, n := binary.Uvarint(b)
		if n <= 0 {
			return 0, false
		}
		b = b[n:]
		return v, true
	}
	var out ClientOps
	floor, ok1 := next()
	last, ok2 := next()
	if !ok1 || !ok2 {
		return errIdemFormat
	}
	out.Floor, out.Last = floor, int64(last)
	prevID, prevV := floor, int64(0)
	for len(b) > 0 {
		d, ok := next()
		if !ok || d == 0 {
			return errIdemFormat
		}
		dv, n := binary.Varint(b)
		if n <= 0 || len(b) < n+8 {
			return errIdemFormat
		}
		r := OpRecord{OpID: prevID + d, Version: prevV + dv, Digest: binary.LittleEndian.Uint64(b[n:])}
		b = b[n+8:]
		out.Recent = append(out.Recent, r)
		prevID, prevV = r.OpID, r.Version
	}
	*c = out
	return nil
}

// legacyMark is the idempotency mark of the former format: the highest op id
// of a client and the version it produced.
type legacyMark struct {
	OpID    uint64 `json:"op"`
	Version int64  `json:"v"`
}

// UnmarshalJSON decodes a document, migrating the former per-client marks
// (the highest op id seen): the mark's own op is remembered with its version
// and unknown content, and every lower id is beyond the window, since
// whether it was applied is not known.
func (d *Document) UnmarshalJSON(b []byte) error {
	type plain Document
	var v struct {
		plain
		Legacy map[string]legacyMark `json:"clients,omitempty"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*d = Document(v.plain)
	for id, m := range v.Legacy {
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
	return nil
}

// OpDigest is the digest of an op's content, as the idempotency record keeps
// it: its field ops (kind, path and value, values compared as JSON data, so
// the spelling of the JSON does not matter), the delete and replace flags,
// the base version (or that there is none) and the If-Match precondition. The HLC stamp is left out:
// the server may have stamped the op. It is never 0.
func OpDigest(op Op) uint64 {
	h := sha256.New()
	var num [8]byte
	put := func(s string) {
		binary.LittleEndian.PutUint64(num[:], uint64(len(s)))
		h.Write(num[:])
		h.Write([]byte(s))
	}
	flags := ""
	if op.Delete {
		flags += "d"
	}
	if op.Replace {
		flags += "r"
	}
	if op.NoBase {
		flags += "n"
	}
	put(flags)
	put(strconv.FormatInt(op.Base, 10))
	put(strconv.FormatInt(op.IfVersion, 10))
	for _, f := range op.Ops {
		put(string(f.Op))
		put(f.Path)
		put(canonicalJSON(f.Value))
	}
	sum := binary.LittleEndian.Uint64(h.Sum(nil))
	if sum == 0 {
		sum = 1
	}
	return sum
}

// canonicalJSON re-encodes a JSON value with sorted object keys and numbers
// as float64 (how both Go and JavaScript read them); an absent value is "".
func canonicalJSON(raw json.RawMessage) string {
	if len(raw) == 0 {
		return ""
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return string(raw)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return string(raw)
	}
	return string(b)
}
