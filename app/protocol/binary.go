package protocol

// The binary encoding (WebSocket subprotocol "autoglm.bin.v1"): the same
// messages as the JSON encoding, in a compact payload carried by small
// checksummed frames. docs/client.md ("Binary encoding") is the
// specification; app/web/client.js implements the same codec and both are
// checked against testdata/binary_vectors.json.
//
// Frame:   opcode u8 | length u8 | payload (length bytes, 0..255) | crc u8
//
//   - opcode bit 7 (0x80) is MORE: another frame of the same message follows.
//     The low 7 bits are the message type of the first frame, and 0x00
//     (continuation) on every later frame.
//   - crc is CRC-8/SMBUS (polynomial 0x07, init 0x00, no reflection, no
//     final xor) over opcode, length and payload.
//
// Payload (the frames' payloads concatenated): fields as tag u8 + value,
// tags strictly increasing, each at most once. The field table (fields.go)
// gives each tag its Message field and value layout.

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"unicode/utf8"

	"github.com/open-autoglm/autoglm/app/clock"
	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/merge"
)

// MaxFramePayload is the largest payload of one frame.
const MaxFramePayload = 255

// Frame opcodes.
const (
	OpContinuation byte = 0x00
	OpNamed        byte = 0x3f // a message type without an opcode; the type travels in field 0
	FlagMore       byte = 0x80
)

// opcodes maps message types to their opcode; typeNames is the reverse.
var opcodes = map[string]byte{
	THello: 0x01, TWelcome: 0x02, TSub: 0x03, TUnsub: 0x04, TOp: 0x05,
	TSnap: 0x06, TDelta: 0x07, TSynced: 0x08, TAck: 0x09, TReject: 0x0a,
	TError: 0x0b, TPing: 0x0c, TPong: 0x0d, TPresence: 0x0e,
}

var typeNames = func() map[byte]string {
	m := make(map[byte]string, len(opcodes))
	for t, op := range opcodes {
		m[op] = t
	}
	return m
}()

// Field op kinds; 0 means the kind's name follows as a string.
var kindCodes = map[merge.Kind]byte{
	merge.KindSet: 1, merge.KindUnset: 2, merge.KindInc: 3,
	merge.KindAdd: 4, merge.KindRemove: 5, merge.KindResolve: 6,
	merge.KindIns: kindIns, merge.KindDel: kindDel, // values in a binary layout (textops.go)
}

// kindSetString is a set whose value is a JSON string, carried as its raw
// text (compact forms only; see plainString).
const kindSetString = 9

var kindNames = func() map[byte]merge.Kind {
	m := make(map[byte]merge.Kind, len(kindCodes))
	for k, c := range kindCodes {
		m[c] = k
	}
	return m
}()

// Frame error codes: a decoder failing with any of them is a protocol error
// (close 4500). They are shared with the JavaScript codec.
const (
	ErrCodeTruncated    = "truncated"      // input ends inside a frame or a message
	ErrCodeBadCRC       = "bad_crc"        // checksum mismatch
	ErrCodeOpcode       = "unknown_opcode" // undefined opcode, or a continuation out of place
	ErrCodeTooLarge     = "too_large"      // reassembled message over the limit
	ErrCodeBadPayload   = "bad_payload"    // payload does not parse
	ErrCodeNotEncodable = "not_encodable"  // a message the encoding cannot carry
)

// FrameError is why binary input was refused (or a message could not be
// encoded). Code is one of the ErrCode constants.
type FrameError struct {
	Code string
	Msg  string
}

func (e *FrameError) Error() string { return "binary frame: " + e.Code + ": " + e.Msg }

func frameErr(code, format string, args ...any) *FrameError {
	return &FrameError{Code: code, Msg: fmt.Sprintf(format, args...)}
}

// crcTable is CRC-8/SMBUS (poly 0x07).
var crcTable = func() (t [256]byte) {
	for i := range t {
		c := byte(i)
		for range 8 {
			if c&0x80 != 0 {
				c = c<<1 ^ 0x07
			} else {
				c <<= 1
			}
		}
		t[i] = c
	}
	return t
}()

// CRC8 is CRC-8/SMBUS of b.
func CRC8(b []byte) byte {
	var c byte
	for _, x := range b {
		c = crcTable[c^x]
	}
	return c
}

// EncodeFrames renders m as binary frames (one WebSocket message).
func EncodeFrames(m Message) ([]byte, error) { return encodeFrames(&m) }

func encodeFrames(m *Message) ([]byte, error) {
	b, err := encodePayload(m)
	if err != nil {
		return nil, err
	}
	op, ok := opcodes[m.T]
	if !ok {
		op = OpNamed
	}
	p := b[frameHeader:]
	if len(p) <= MaxFramePayload {
		// One frame, in place: the payload follows room for its header.
		b[0], b[1] = op, byte(len(p))
		return append(b, CRC8(b)), nil
	}
	n := (len(p) + MaxFramePayload - 1) / MaxFramePayload
	out := make([]byte, 0, len(p)+3*n)
	for i := 0; i < n; i++ {
		chunk := p[i*MaxFramePayload : min(len(p), (i+1)*MaxFramePayload)]
		code := op
		if i > 0 {
			code = OpContinuation
		}
		if i < n-1 {
			code |= FlagMore
		}
		start := len(out)
		out = append(out, code, byte(len(chunk)))
		out = append(out, chunk...)
		out = append(out, CRC8(out[start:]))
	}
	return out, nil
}

// DecodeFrames reads every message in b (one or more complete messages of
// frames). maxMessage bounds one reassembled payload (<= 0: 1 MiB). Errors
// are *FrameError.
func DecodeFrames(b []byte, maxMessage int) ([]Message, error) {
	if maxMessage <= 0 {
		maxMessage = 1 << 20
	}
	var (
		out     []Message
		payload []byte
		typ     byte
		open    bool // a message has started and expects continuation frames
		pos     int
	)
	for len(b) > 0 {
		if len(b) < 2 || len(b) < 3+int(b[1]) {
			return nil, frameErr(ErrCodeTruncated, "frame at byte %d needs %d bytes, %d left", pos, frameLen(b), len(b))
		}
		n := int(b[1])
		frame := b[:2+n]
		if got, want := b[2+n], CRC8(frame); got != want {
			return nil, frameErr(ErrCodeBadCRC, "crc 0x%02x, want 0x%02x", got, want)
		}
		code := b[0] &^ FlagMore
		more := b[0]&FlagMore != 0
		switch {
		case open && code != OpContinuation:
			return nil, frameErr(ErrCodeOpcode, "opcode 0x%02x where a continuation frame was expected", code)
		case !open && code == OpContinuation:
			return nil, frameErr(ErrCodeOpcode, "continuation frame without a message")
		case !open && code != OpNamed && typeNames[code] == "":
			return nil, frameErr(ErrCodeOpcode, "opcode 0x%02x", code)
		}
		if !open {
			typ, payload = code, payload[:0]
		}
		if len(payload)+n > maxMessage {
			return nil, frameErr(ErrCodeTooLarge, "message over %d bytes", maxMessage)
		}
		payload = append(payload, frame[2:]...)
		b = b[3+n:]
		pos += 3 + n
		open = more
		if !more {
			out = append(out, Message{})
			if err := decodePayload(typ, payload, &out[len(out)-1]); err != nil {
				return nil, err
			}
		}
	}
	if open {
		return nil, frameErr(ErrCodeTruncated, "message ends without its last frame")
	}
	if len(out) == 0 {
		return nil, frameErr(ErrCodeTruncated, "no frames")
	}
	return out, nil
}

func frameLen(b []byte) int {
	if len(b) < 2 {
		return 3
	}
	return 3 + int(b[1])
}

// EncodePayload renders the fields of m (without framing).
func EncodePayload(m Message) ([]byte, error) {
	b, err := encodePayload(&m)
	if err != nil {
		return nil, err
	}
	return b[frameHeader:], nil
}

// frameHeader is the room encodePayload leaves before the payload, so that
// a message of one frame is framed in place.
const frameHeader = 2

// encodePayload walks the field table in tag order and writes every field
// that is set, after frameHeader bytes of room.
func encodePayload(m *Message) ([]byte, error) {
	e := enc{b: make([]byte, frameHeader, 128)}
	for _, rows := range &byTag {
		switch {
		case rows == nil:
		case rows[0].wire == wireFlag:
			e.flags(rows, m)
		default:
			if err := e.field(rows[0], m); err != nil {
				return nil, err
			}
		}
	}
	if hasExt(m) {
		ext, err := extFields(m)
		if err != nil {
			return nil, err
		}
		if ext != nil {
			e.tag(tagExt)
			e.bytes(ext)
		}
	}
	return e.b, nil
}

// field writes one field of m (not a flag, not ext) unless it is left out.
func (e *enc) field(f *field, m *Message) error {
	switch p := f.ref(m); f.wire {
	case wireType:
		if t := *p.(*string); opcodes[t] == 0 {
			if t == "" {
				return frameErr(ErrCodeNotEncodable, "message has no type")
			}
			e.str(f.tag, t)
		}
	case wireStr:
		e.str(f.tag, *strRef(p))
	case wireZigzag:
		e.sint(f.tag, *p.(*int64))
	case wireInt32:
		e.sint(f.tag, int64(*p.(*int)))
	case wirePrev:
		if v := *p.(*int64); v != defaultPV(m.T, m.V) {
			e.tag(f.tag)
			e.zigzag(v)
		}
	case wireUvarint:
		if v := *p.(*uint64); v != 0 {
			e.tag(f.tag)
			e.uvarint(v)
		}
	case wireHLC, wireHLCHere:
		return e.hlc(f, *p.(*clock.Timestamp), m)
	case wireOps:
		if ops := *p.(*[]merge.FieldOp); ops != nil {
			return e.ops(f.tag, ops, m.Compact)
		}
	case wireObject, wireAnyJSON:
		if v := jsonValue(p); v != nil {
			return e.json(f.tag, v)
		}
	case wireStrs:
		if list := *p.(*[]string); list != nil {
			e.tag(f.tag)
			e.uvarint(uint64(len(list)))
			for _, s := range list {
				e.bytes([]byte(s))
			}
		}
	}
	return nil
}

// flags writes the byte of the flags sharing one tag, unless none is set.
func (e *enc) flags(rows []*field, m *Message) {
	var b byte
	for _, f := range rows {
		if *f.ref(m).(*bool) {
			b |= f.bit
		}
	}
	if b != 0 {
		e.b = append(e.b, rows[0].tag, b)
	}
}

// strRef is the string behind a wireStr field.
func strRef(p any) *string {
	if c, ok := p.(*core.Code); ok {
		return (*string)(c)
	}
	return p.(*string)
}

// jsonValue is the value of a wireObject or wireAnyJSON field; nil when it
// is absent.
func jsonValue(p any) any {
	if obj, ok := p.(*map[string]any); ok {
		if *obj == nil {
			return nil
		}
		return *obj
	}
	return *p.(*any)
}

// hlc writes a stamp: wireHLC unless its node is the server's (Here), then
// wireHLCHere without the node.
func (e *enc) hlc(f *field, h clock.Timestamp, m *Message) error {
	if h.IsZero() || m.Here != (f.wire == wireHLCHere) {
		return nil
	}
	if h.Wall < 0 {
		return frameErr(ErrCodeNotEncodable, "negative hlc wall time")
	}
	e.tag(f.tag)
	e.uvarint(uint64(h.Wall))
	e.uvarint(uint64(h.Logical))
	switch {
	case m.Here:
	case m.By != "" && h.Node == m.By:
		e.bytes(nil) // the author's own stamp: the decoder takes by
	default:
		e.bytes([]byte(h.Node))
	}
	return nil
}

func (e *enc) ops(tag byte, ops []merge.FieldOp, compact bool) error {
	e.tag(tag)
	e.uvarint(uint64(len(ops)))
	for _, o := range ops {
		if s, ok := plainString(o.Value); ok && compact && o.Op == merge.KindSet {
			e.b = append(e.b, kindSetString)
			e.bytes([]byte(o.Path))
			e.bytes(s)
			continue
		}
		k, ok := kindCodes[o.Op]
		if ok && (k == kindIns || k == kindDel) {
			if v, compact := encodeTextValue(k, o.Value); compact {
				e.b = append(e.b, k)
				e.bytes([]byte(o.Path))
				e.bytes(v)
				continue
			}
			k, ok = 0, false // by name, with its JSON value
		}
		e.b = append(e.b, k)
		if !ok {
			if o.Op == "" {
				return frameErr(ErrCodeNotEncodable, "field op without a kind")
			}
			e.bytes([]byte(o.Op))
		}
		e.bytes([]byte(o.Path))
		e.bytes(o.Value)
	}
	return nil
}

// defaultPV is the previous version a decoder assumes when the field is
// absent: deltas and acks almost always follow the version before them.
func defaultPV(t string, v int64) int64 {
	if (t == TDelta || t == TAck) && v > 0 {
		return v - 1
	}
	return 0
}

type enc struct{ b []byte }

func (e *enc) tag(t byte)       { e.b = append(e.b, t) }
func (e *enc) uvarint(v uint64) { e.b = binary.AppendUvarint(e.b, v) }
func (e *enc) zigzag(v int64)   { e.b = binary.AppendVarint(e.b, v) }
func (e *enc) bytes(p []byte)   { e.uvarint(uint64(len(p))); e.b = append(e.b, p...) }
func (e *enc) str(t byte, s string) {
	if s != "" {
		e.tag(t)
		e.bytes([]byte(s))
	}
}

func (e *enc) sint(t byte, v int64) {
	if v != 0 {
		e.tag(t)
		e.zigzag(v)
	}
}

func (e *enc) json(t byte, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return frameErr(ErrCodeNotEncodable, "field %d: %v", t, err)
	}
	e.tag(t)
	e.bytes(b)
	return nil
}

// dec reads a payload; the first error sticks.
type dec struct {
	b   []byte
	err *FrameError
}

func (d *dec) fail(format string, args ...any) {
	if d.err == nil {
		d.err = frameErr(ErrCodeBadPayload, format, args...)
	}
}

func (d *dec) byte() byte {
	if len(d.b) == 0 {
		d.fail("payload ends early")
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *dec) uvarint() uint64 { v, n := binary.Uvarint(d.b); d.skipVarint(n); return v }
func (d *dec) zigzag() int64   { v, n := binary.Varint(d.b); d.skipVarint(n); return v }

// skipVarint moves past a varint of n bytes; n <= 0 is a bad one (read as
// 0).
func (d *dec) skipVarint(n int) {
	if n <= 0 {
		d.fail("bad varint")
		d.b = nil
		return
	}
	d.b = d.b[n:]
}

func (d *dec) bytes() []byte {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.fail("length %d over the %d bytes left", n, len(d.b))
		d.b = nil
		return nil
	}
	p := d.b[:n:n]
	d.b = d.b[n:]
	return p
}

func (d *dec) str() string {
	p := d.bytes()
	if !utf8.Valid(p) {
		d.fail("string is not UTF-8")
	}
	return string(p)
}

func (d *dec) jsonText(what string) json.RawMessage {
	p := d.bytes()
	if d.err == nil && !json.Valid(p) {
		d.fail("%s is not JSON", what)
	}
	return p
}

// decodePayload reads the fields of a payload into m (zero on entry): each
// tag, in increasing order, names its rows of the field table.
func decodePayload(op byte, p []byte, m *Message) error {
	d := &dec{b: p}
	if op != OpNamed {
		m.T = typeNames[op]
	}
	pvSet := false
	last := -1
	for len(d.b) > 0 && d.err == nil {
		t := int(d.byte())
		if t <= last {
			d.fail("field %d after field %d", t, last)
			break
		}
		last = t
		switch {
		case t == tagExt:
			d.ext(m)
		case t < tagExt && byTag[t] != nil:
			pvSet = d.field(byTag[t], op, m) || pvSet
		default:
			d.fail("unknown field %d", t)
		}
	}
	if d.err != nil {
		return d.err
	}
	if m.T == "" {
		return frameErr(ErrCodeBadPayload, "message has no type")
	}
	if !pvSet {
		m.PV = defaultPV(m.T, m.V)
	}
	if !m.HLC.IsZero() && m.HLC.Node == "" && !m.Here {
		m.HLC.Node = m.By
	}
	return nil
}

// field reads the value of one tag into its rows (one row, or the flags);
// it reports whether that was an explicit pv.
func (d *dec) field(rows []*field, op byte, m *Message) (pv bool) {
	f := rows[0]
	switch p := f.ref(m); f.wire {
	case wireType:
		if op != OpNamed {
			d.fail("type field on opcode 0x%02x", op)
		}
		*p.(*string) = d.str()
	case wireStr:
		*strRef(p) = d.str()
	case wireZigzag:
		*p.(*int64) = d.zigzag()
	case wireInt32:
		v := d.zigzag()
		if v < math.MinInt32 || v > math.MaxInt32 {
			d.fail("%s out of range", f.name)
		}
		*p.(*int) = int(v)
	case wirePrev:
		*p.(*int64) = d.zigzag()
		return true
	case wireUvarint:
		*p.(*uint64) = d.uvarint()
	case wireHLC, wireHLCHere:
		d.hlc(f, p.(*clock.Timestamp), m)
	case wireOps:
		*p.(*[]merge.FieldOp) = d.ops()
	case wireFlag:
		d.flags(rows, m)
	case wireObject:
		if raw := d.jsonText(f.name); d.err == nil {
			if obj := p.(*map[string]any); json.Unmarshal(raw, obj) != nil || *obj == nil {
				d.fail("%s is not a JSON object", f.name)
			}
		}
	case wireAnyJSON:
		if raw := d.jsonText(f.name); d.err == nil {
			_ = json.Unmarshal(raw, p) // valid JSON always decodes into any
		}
	case wireStrs:
		*p.(*[]string) = d.strs(f.name)
	}
	return false
}

func (d *dec) hlc(f *field, h *clock.Timestamp, m *Message) {
	wall, logical := d.uvarint(), d.uvarint()
	if f.wire == wireHLCHere {
		if wall > clock.MaxWall || logical > math.MaxUint32 || !h.IsZero() {
			d.fail("hlc out of range, or twice")
		}
		*h, m.Here = clock.Timestamp{Wall: int64(wall), Logical: uint32(logical)}, true
		return
	}
	node := d.str()
	if wall > clock.MaxWall || logical > math.MaxUint32 {
		d.fail("hlc out of range")
	}
	*h = clock.Timestamp{Wall: int64(wall), Logical: uint32(logical), Node: node}
}

func (d *dec) flags(rows []*field, m *Message) {
	b := d.byte()
	var known byte
	for _, f := range rows {
		known |= f.bit
		*f.ref(m).(*bool) = b&f.bit != 0
	}
	if b&^known != 0 {
		d.fail("unknown flags 0x%02x", b)
	}
}

func (d *dec) strs(name string) []string {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.fail("%d %s in %d bytes", n, name, len(d.b))
		return nil
	}
	list := make([]string, 0, n)
	for i := uint64(0); i < n && d.err == nil; i++ {
		list = append(list, d.str())
	}
	return list
}

// ext reads the object of fields without a tag: the ones this build
// knows are set (the tagged fields win), the others ignored like unknown
// JSON fields.
func (d *dec) ext(m *Message) {
	raw := d.jsonText("ext")
	if d.err != nil {
		return
	}
	var ext Message
	if !bytes.HasPrefix(bytes.TrimSpace(raw), []byte("{")) || json.Unmarshal(raw, &ext) != nil {
		d.fail("ext is not a JSON object of message fields")
		return
	}
	copyExt(m, &ext)
}

func (d *dec) ops() []merge.FieldOp {
	n := d.uvarint()
	// Every op takes at least three bytes; refuse counts the payload cannot
	// hold before allocating for them.
	if n > uint64(len(d.b)/3) {
		d.fail("%d ops in %d bytes", n, len(d.b))
		return nil
	}
	ops := make([]merge.FieldOp, 0, n)
	for i := uint64(0); i < n && d.err == nil; i++ {
		var o merge.FieldOp
		c := d.byte()
		if c == kindSetString {
			o.Op, o.Path = merge.KindSet, d.str()
			v := d.bytes()
			if _, ok := plainString(quoted(v)); !ok && d.err == nil {
				d.fail("op %d: string value needs escaping", i)
			}
			o.Value = quoted(v)
			ops = append(ops, o)
			continue
		}
		if c == 0 {
			o.Op = merge.Kind(d.str())
			if o.Op == "" {
				d.fail("op %d: empty kind", i)
			}
		} else if o.Op = kindNames[c]; o.Op == "" {
			d.fail("op %d: unknown kind %d", i, c)
		}
		o.Path = d.str()
		if c == kindIns || c == kindDel {
			v, err := decodeTextValue(c, d.bytes())
			if err != nil && d.err == nil {
				d.fail("op %d: %s", i, err.(*FrameError).Msg)
			}
			o.Value = v
		} else if v := d.bytes(); len(v) > 0 {
			if d.err == nil && !json.Valid(v) {
				d.fail("op %d: value is not JSON", i)
			}
			o.Value = json.RawMessage(slices.Clone(v))
		}
		ops = append(ops, o)
	}
	return ops
}

// plainString returns the text of a JSON string value that has nothing to
// escape (no quote, backslash, control character, U+2028 or U+2029, and
// valid UTF-8): its JSON text is the text in quotes, as every encoder
// writes it, so carrying the raw text loses nothing.
func plainString(v json.RawMessage) ([]byte, bool) {
	if len(v) < 2 || v[0] != '"' || v[len(v)-1] != '"' {
		return nil, false
	}
	s := v[1 : len(v)-1]
	if !utf8.Valid(s) || bytes.ContainsAny(s, `"\`+"\u2028\u2029") {
		return nil, false
	}
	for _, c := range s {
		if c < 0x20 {
			return nil, false
		}
	}
	return s, true
}

// quoted is the JSON text of a plain string.
func quoted(s []byte) json.RawMessage {
	q := make([]byte, 0, len(s)+2)
	q = append(q, '"')
	q = append(q, s...)
	return append(q, '"')
}
