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
// tags strictly increasing, each at most once. Value kinds: uvarint
// (LEB128), zigzag (signed LEB128 as in protobuf sint64), str and json
// (uvarint byte length + UTF-8 / JSON text), flags (one byte).

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

// Field tags, in the order they must appear.
const (
	tagType    = 0  // str: message type (only with OpNamed)
	tagClient  = 1  // str
	tagToken   = 2  // str
	tagSession = 3  // str
	tagNode    = 4  // str
	tagHB      = 5  // zigzag
	tagProto   = 6  // zigzag
	tagDoc     = 7  // str
	tagSince   = 8  // zigzag
	tagV       = 9  // zigzag
	tagPV      = 10 // zigzag; delta and ack: absent means v-1, other types: absent means 0
	tagOp      = 11 // uvarint
	tagBase    = 12 // zigzag
	tagHLC     = 13 // uvarint wall ms, uvarint counter, str node (empty: the node is by)
	tagOps     = 14 // uvarint count, then per op: kind u8 [str name if kind 0], str path, json value (length 0: none)
	tagBy      = 15 // str
	tagFlags   = 16 // u8: 0x01 del, 0x02 new, 0x04 dup, 0x08 full
	tagData    = 17 // json object
	tagCode    = 18 // str
	tagMsg     = 19 // str
	tagDetails = 20 // json
	tagTS      = 21 // zigzag
	tagRoles   = 22 // uvarint count, then str each
	tagH       = 23 // uvarint: the subscription's handle in place of doc (proto 2)
	tagA       = 24 // uvarint: the author's number (proto 2)
	tagHLCHere = 25 // uvarint wall ms, uvarint counter: an hlc whose node is the server's (proto 2)
	tagExt     = 31 // json object: fields this encoding has no tag for
)

const (
	flagDel  = 0x01
	flagNew  = 0x02
	flagDup  = 0x04
	flagFull = 0x08
)

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
func EncodeFrames(m Message) ([]byte, error) {
	p, err := EncodePayload(m)
	if err != nil {
		return nil, err
	}
	op, ok := opcodes[m.T]
	if !ok {
		op = OpNamed
	}
	n := max(1, (len(p)+MaxFramePayload-1)/MaxFramePayload)
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
			m, err := decodePayload(typ, payload)
			if err != nil {
				return nil, err
			}
			out = append(out, m)
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
	var e enc
	if _, ok := opcodes[m.T]; !ok {
		if m.T == "" {
			return nil, frameErr(ErrCodeNotEncodable, "message has no type")
		}
		e.str(tagType, m.T)
	}
	e.str(tagClient, m.Client)
	e.str(tagToken, m.Token)
	e.str(tagSession, m.Session)
	e.str(tagNode, m.Node)
	e.sint(tagHB, m.HB)
	e.sint(tagProto, int64(m.Proto))
	e.str(tagDoc, m.Doc)
	e.sint(tagSince, m.Since)
	e.sint(tagV, m.V)
	if m.PV != defaultPV(m.T, m.V) {
		e.tag(tagPV)
		e.zigzag(m.PV)
	}
	if m.Op != 0 {
		e.tag(tagOp)
		e.uvarint(m.Op)
	}
	e.sint(tagBase, m.Base)
	if !m.HLC.IsZero() && !m.Here {
		if m.HLC.Wall < 0 {
			return nil, frameErr(ErrCodeNotEncodable, "negative hlc wall time")
		}
		e.tag(tagHLC)
		e.uvarint(uint64(m.HLC.Wall))
		e.uvarint(uint64(m.HLC.Logical))
		if m.By != "" && m.HLC.Node == m.By {
			e.bytes(nil) // the author's own stamp: the decoder takes by
		} else {
			e.bytes([]byte(m.HLC.Node))
		}
	}
	if m.Ops != nil {
		e.tag(tagOps)
		e.uvarint(uint64(len(m.Ops)))
		for _, o := range m.Ops {
			if s, ok := plainString(o.Value); ok && m.Compact && o.Op == merge.KindSet {
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
					return nil, frameErr(ErrCodeNotEncodable, "field op without a kind")
				}
				e.bytes([]byte(o.Op))
			}
			e.bytes([]byte(o.Path))
			e.bytes(o.Value)
		}
	}
	e.str(tagBy, m.By)
	var flags byte
	if m.Del {
		flags |= flagDel
	}
	if m.New {
		flags |= flagNew
	}
	if m.Dup {
		flags |= flagDup
	}
	if m.Full {
		flags |= flagFull
	}
	if flags != 0 {
		e.b = append(e.b, tagFlags, flags)
	}
	if m.Data != nil {
		if err := e.json(tagData, m.Data); err != nil {
			return nil, err
		}
	}
	e.str(tagCode, string(m.Code))
	e.str(tagMsg, m.Msg)
	if m.Details != nil {
		if err := e.json(tagDetails, m.Details); err != nil {
			return nil, err
		}
	}
	e.sint(tagTS, m.TS)
	if m.Roles != nil {
		e.tag(tagRoles)
		e.uvarint(uint64(len(m.Roles)))
		for _, r := range m.Roles {
			e.bytes([]byte(r))
		}
	}
	if m.H != 0 {
		e.tag(tagH)
		e.uvarint(m.H)
	}
	if m.A != 0 {
		e.tag(tagA)
		e.uvarint(m.A)
	}
	if m.Here && !m.HLC.IsZero() {
		if m.HLC.Wall < 0 {
			return nil, frameErr(ErrCodeNotEncodable, "negative hlc wall time")
		}
		e.tag(tagHLCHere)
		e.uvarint(uint64(m.HLC.Wall))
		e.uvarint(uint64(m.HLC.Logical))
	}
	ext, err := extFields(m)
	if err != nil {
		return nil, err
	}
	if ext != nil {
		e.tag(tagExt)
		e.bytes(ext)
	}
	return e.b, nil
}

// defaultPV is the previous version a decoder assumes when the field is
// absent: deltas and acks almost always follow the version before them.
func defaultPV(t string, v int64) int64 {
	if (t == TDelta || t == TAck) && v > 0 {
		return v - 1
	}
	return 0
}

// extFields renders the fields of m this encoding has no tag for (fields
// added to Message later), as a JSON object; nil when there are none.
func extFields(m Message) ([]byte, error) {
	rest := m
	rest.T, rest.Client, rest.Token, rest.Session, rest.Node, rest.HB, rest.Proto = "", "", "", "", "", 0, 0
	rest.Doc, rest.Since, rest.V, rest.PV, rest.Op, rest.Base = "", 0, 0, 0, 0, 0
	rest.HLC, rest.Ops, rest.By, rest.Del, rest.New, rest.Dup, rest.Data = clock.Timestamp{}, nil, "", false, false, false, nil
	rest.Code, rest.Msg, rest.Details, rest.TS, rest.Roles, rest.Full = "", "", nil, 0, nil, false
	rest.H, rest.A = 0, 0
	b, err := json.Marshal(rest)
	if err != nil {
		return nil, frameErr(ErrCodeNotEncodable, "%v", err)
	}
	if string(b) == `{"t":""}` {
		return nil, nil
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(b, &fields); err != nil {
		return nil, frameErr(ErrCodeNotEncodable, "%v", err)
	}
	delete(fields, "t")
	if len(fields) == 0 {
		return nil, nil
	}
	return json.Marshal(fields)
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

func (d *dec) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("bad varint")
		d.b = nil
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *dec) zigzag() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail("bad varint")
		d.b = nil
		return 0
	}
	d.b = d.b[n:]
	return v
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

func decodePayload(op byte, p []byte) (Message, error) {
	d := &dec{b: p}
	var m Message
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
		switch t {
		case tagType:
			if op != OpNamed {
				d.fail("type field on opcode 0x%02x", op)
			}
			m.T = d.str()
		case tagClient:
			m.Client = d.str()
		case tagToken:
			m.Token = d.str()
		case tagSession:
			m.Session = d.str()
		case tagNode:
			m.Node = d.str()
		case tagHB:
			m.HB = d.zigzag()
		case tagProto:
			v := d.zigzag()
			if v < math.MinInt32 || v > math.MaxInt32 {
				d.fail("proto out of range")
			}
			m.Proto = int(v)
		case tagDoc:
			m.Doc = d.str()
		case tagSince:
			m.Since = d.zigzag()
		case tagV:
			m.V = d.zigzag()
		case tagPV:
			m.PV, pvSet = d.zigzag(), true
		case tagOp:
			m.Op = d.uvarint()
		case tagBase:
			m.Base = d.zigzag()
		case tagHLC:
			wall, logical := d.uvarint(), d.uvarint()
			node := d.str()
			if wall > clock.MaxWall || logical > math.MaxUint32 {
				d.fail("hlc out of range")
			}
			m.HLC = clock.Timestamp{Wall: int64(wall), Logical: uint32(logical), Node: node}
		case tagOps:
			m.Ops = d.ops()
		case tagBy:
			m.By = d.str()
		case tagFlags:
			f := d.byte()
			if f&^(flagDel|flagNew|flagDup|flagFull) != 0 {
				d.fail("unknown flags 0x%02x", f)
			}
			m.Del, m.New, m.Dup, m.Full = f&flagDel != 0, f&flagNew != 0, f&flagDup != 0, f&flagFull != 0
		case tagData:
			raw := d.jsonText("data")
			if d.err == nil {
				if err := json.Unmarshal(raw, &m.Data); err != nil || m.Data == nil {
					d.fail("data is not a JSON object")
				}
			}
		case tagCode:
			m.Code = core.Code(d.str())
		case tagMsg:
			m.Msg = d.str()
		case tagDetails:
			raw := d.jsonText("details")
			if d.err == nil {
				_ = json.Unmarshal(raw, &m.Details) // valid JSON always decodes into any
			}
		case tagTS:
			m.TS = d.zigzag()
		case tagRoles:
			n := d.uvarint()
			if n > uint64(len(d.b)) {
				d.fail("%d roles in %d bytes", n, len(d.b))
				break
			}
			m.Roles = make([]string, 0, n)
			for i := uint64(0); i < n && d.err == nil; i++ {
				m.Roles = append(m.Roles, d.str())
			}
		case tagH:
			m.H = d.uvarint()
		case tagA:
			m.A = d.uvarint()
		case tagHLCHere:
			wall, logical := d.uvarint(), d.uvarint()
			if wall > clock.MaxWall || logical > math.MaxUint32 || !m.HLC.IsZero() {
				d.fail("hlc out of range, or twice")
			}
			m.HLC, m.Here = clock.Timestamp{Wall: int64(wall), Logical: uint32(logical)}, true
		case tagExt:
			raw := d.jsonText("ext")
			if d.err == nil {
				var ext Message
				if !bytes.HasPrefix(bytes.TrimSpace(raw), []byte("{")) || json.Unmarshal(raw, &ext) != nil {
					d.fail("ext is not a JSON object of message fields")
					break
				}
				m = mergeExt(m, ext)
			}
		default:
			d.fail("unknown field %d", t)
		}
	}
	if d.err != nil {
		return Message{}, d.err
	}
	if m.T == "" {
		return Message{}, frameErr(ErrCodeBadPayload, "message has no type")
	}
	if !pvSet {
		m.PV = defaultPV(m.T, m.V)
	}
	if !m.HLC.IsZero() && m.HLC.Node == "" && !m.Here {
		m.HLC.Node = m.By
	}
	return m, nil
}

// mergeExt keeps the tagged fields of m and takes every other field from
// ext (fields this encoding has no tag for).
func mergeExt(m, ext Message) Message {
	known := m
	m = ext
	m.T, m.Client, m.Token, m.Session, m.Node, m.HB, m.Proto = known.T, known.Client, known.Token, known.Session, known.Node, known.HB, known.Proto
	m.Doc, m.Since, m.V, m.PV, m.Op, m.Base = known.Doc, known.Since, known.V, known.PV, known.Op, known.Base
	m.HLC, m.Ops, m.By, m.Del, m.New, m.Dup, m.Data = known.HLC, known.Ops, known.By, known.Del, known.New, known.Dup, known.Data
	m.Code, m.Msg, m.Details, m.TS, m.Roles, m.Full = known.Code, known.Msg, known.Details, known.TS, known.Roles, known.Full
	m.H, m.A, m.Here, m.Compact = known.H, known.A, known.Here, known.Compact
	return m
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
