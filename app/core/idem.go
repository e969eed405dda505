package core

import (
	"cmp"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"hash/fnv"
	"maps"
	"slices"
	"strconv"
	"strings"
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
// A client whose record is dropped (past IdemClients, or idle past the
// compaction age) leaves a gone entry with its floor (GoneClient), so its
// later ops are judged as above. A client the document knows nothing of is
// new, unless the gone list itself overflowed: then an op whose base is
// below the document's horizon may be the retry of a forgotten client and is
// beyond the window (Document.BeyondHorizon).
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
	// document (about 15 KB encoded). Past it, the client that holds the
	// most records forgets its lowest op id (a fair share): a client that
	// stalls keeps its few records while others write.
	IdemPerDocument = 1024
	// IdemClients bounds the clients a document keeps records for; past it,
	// the client that wrote least recently moves to the gone list.
	IdemClients = 256
	// IdemGone bounds the gone list (about 14 KB encoded at most); past it,
	// the oldest entry leaves and raises the document's horizon.
	IdemGone = 1024
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

// GoneClient is a client whose record a document dropped (IdemClients, or
// compaction's pruning of idle clients): a hash of its id and the highest op
// id it had recorded. Its ops up to Floor are beyond the window; a later op
// gives it a fresh record with that floor.
type GoneClient struct {
	Hash  uint64 // ClientHash of the client id
	Floor uint64
}

// GoneClients is a document's gone list, oldest first. Like ClientOps it is
// never changed in place once stored.
type GoneClients []GoneClient

// ClientHash is the 64-bit FNV-1a hash of a client id, as the gone list
// keeps it.
func ClientHash(id string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(id))
	return h.Sum64()
}

func (g GoneClients) find(hash uint64) int {
	for i := len(g) - 1; i >= 0; i-- {
		if g[i].Hash == hash {
			return i
		}
	}
	return -1
}

// IdemRecord returns the idempotency record of client: its own, an empty one
// with its former floor when it is on the gone list, or nil when the document
// knows nothing of it.
func (d *Document) IdemRecord(client string) *ClientOps {
	if c, ok := d.Idem[client]; ok {
		return c
	}
	if i := d.Gone.find(ClientHash(client)); i >= 0 {
		return &ClientOps{Floor: d.Gone[i].Floor}
	}
	return nil
}

// BeyondHorizon reports whether op, from a client the document knows nothing
// of (IdemRecord is nil), may have been applied by a client whose gone entry
// has since been dropped: the document has a horizon and the op's base (its
// If-Match version, if higher; 0 without a base) is below it. An op based at
// or above the horizon would have been applied at a later version, so its
// client would still be known.
func (d *Document) BeyondHorizon(op Op) bool {
	if d.Horizon == 0 {
		return false
	}
	base := op.IfVersion
	if !op.NoBase {
		base = max(base, op.Base)
	}
	return base < d.Horizon
}

// Remember records r, applied at wall time now, for client. A client on the
// gone list leaves it and starts from its former floor.
func (d *Document) Remember(client string, r OpRecord, now int64) {
	c, ok := d.Idem[client]
	if !ok {
		if i := d.Gone.find(ClientHash(client)); i >= 0 {
			c = &ClientOps{Floor: d.Gone[i].Floor}
			d.Gone = slices.Concat(d.Gone[:i], d.Gone[i+1:])
		}
	}
	if d.Idem == nil {
		d.Idem = map[string]*ClientOps{}
	}
	d.Idem[client] = c.With(r, now)
}

// ForgetClients moves the records of clients to the gone list. It changes
// d.Idem (a map the caller owns) but never the records in it.
func (d *Document) ForgetClients(clients []string) {
	var add GoneClients
	for _, id := range clients {
		c, ok := d.Idem[id]
		if !ok {
			continue
		}
		floor := c.Floor
		if n := len(c.Recent); n > 0 {
			floor = max(floor, c.Recent[n-1].OpID)
		}
		add = append(add, GoneClient{Hash: ClientHash(id), Floor: floor})
		delete(d.Idem, id)
	}
	if len(add) == 0 {
		return
	}
	gone := make(GoneClients, 0, len(d.Gone)+len(add))
	for _, g := range d.Gone {
		if add.find(g.Hash) < 0 {
			gone = append(gone, g)
		}
	}
	gone = append(gone, add...)
	if n := len(gone) - IdemGone; n > 0 {
		// Every op of the dropped clients was applied at or below the
		// current version.
		gone = gone[n:]
		d.Horizon = max(d.Horizon, d.Version)
	}
	d.Gone = gone
}

// BoundIdem keeps a document's idempotency records within IdemClients
// clients (the least recent move to the gone list) and IdemPerDocument
// remembered ops (the client holding the most forgets its lowest op id;
// ties: the client whose oldest record has the lowest version). It changes
// d.Idem (a map the caller owns) but never the records in it.
func BoundIdem(d *Document) {
	ops := d.Idem
	if n := len(ops) - IdemClients; n > 0 {
		ids := slices.Collect(maps.Keys(ops))
		slices.SortFunc(ids, func(a, b string) int {
			if c := cmp.Compare(ops[a].Last, ops[b].Last); c != 0 {
				return c
			}
			return strings.Compare(a, b)
		})
		d.ForgetClients(ids[:n])
	}
	n := 0
	for _, c := range ops {
		n += len(c.Recent)
	}
	for ; n > IdemPerDocument; n-- {
		var (
			who string
			top *ClientOps
		)
		for id, c := range ops {
			if len(c.Recent) == 0 {
				continue
			}
			if top == nil || len(c.Recent) > len(top.Recent) ||
				len(c.Recent) == len(top.Recent) && (c.Recent[0].Version < top.Recent[0].Version ||
					c.Recent[0].Version == top.Recent[0].Version && id < who) {
				who, top = id, c
			}
		}
		ops[who] = top.without(top.Recent[0].OpID)
	}
}

// MarshalJSON encodes the gone list as one base64url string of, per entry,
// the 8-byte hash (little endian) and the uvarint floor: 9 to 18 bytes an
// entry before base64.
func (g GoneClients) MarshalJSON() ([]byte, error) { return g.appendJSON(nil), nil }

func (g GoneClients) appendJSON(out []byte) []byte {
	b := make([]byte, 0, len(g)*12)
	for _, e := range g {
		b = binary.LittleEndian.AppendUint64(b, e.Hash)
		b = binary.AppendUvarint(b, e.Floor)
	}
	return appendBase64String(out, b)
}

// appendBase64String appends b as a JSON string of base64url, which needs
// no escaping.
func appendBase64String(out, b []byte) []byte {
	out = append(out, '"')
	out = base64.RawURLEncoding.AppendEncode(out, b)
	return append(out, '"')
}

// UnmarshalJSON decodes MarshalJSON's encoding.
func (g *GoneClients) UnmarshalJSON(data []byte) error {
	b, err := decodeIdem(data)
	if err != nil {
		return err
	}
	var out GoneClients
	for len(b) > 0 {
		if len(b) < 9 {
			return errIdemFormat
		}
		h := binary.LittleEndian.Uint64(b)
		f, n := binary.Uvarint(b[8:])
		if n <= 0 {
			return errIdemFormat
		}
		out = append(out, GoneClient{Hash: h, Floor: f})
		b = b[8+n:]
	}
	*g = out
	return nil
}

// Encoding: a record is one JSON string, base64url of
//
//	uvarint Floor | uvarint Last | per op: uvarint (id - previous id) |
//	varint (version - previous version) | 8 bytes digest (little endian)
//
// where the first op's "previous" id is Floor and its previous version 0.
// A remembered op costs about 11 bytes before base64.

// MarshalJSON encodes the record compactly.
func (c ClientOps) MarshalJSON() ([]byte, error) { return c.appendJSON(nil), nil }

func (c ClientOps) appendJSON(out []byte) []byte {
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
	return appendBase64String(out, b)
}

var errIdemFormat = errors.New("idempotency record: malformed")

// decodeIdem returns the bytes of an encoded record: a JSON string of
// base64url.
func decodeIdem(data []byte) ([]byte, error) {
	var s string
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, err
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, errIdemFormat
	}
	return b, nil
}

// UnmarshalJSON decodes MarshalJSON's encoding.
func (c *ClientOps) UnmarshalJSON(data []byte) error {
	b, err := decodeIdem(data)
	if err != nil {
		return err
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
