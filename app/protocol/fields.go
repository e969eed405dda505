package protocol

import (
	"encoding/json"
	"reflect"
)

//go:generate go test -run ^TestClientFieldTable$ -update

// The binary encoding's fields: one row per Message field, in tag order.
// The Go encoder and decoder (binary.go) walk this table, and the
// JavaScript codec walks the copy of it that `go generate` writes into
// app/web/client.js (TestClientFieldTable fails while that copy is stale).
// A new Message field is one row here: with a tag and a wire layout it
// travels as its own field; with wireExt it rides in the ext object (tag
// 31), as every field without a tag does. Then add vectors
// (binary_test.go) and run `go generate ./app/protocol`.
var fields = []field{
	{tag: 0, name: "t", wire: wireType, ref: func(m *Message) any { return &m.T }},
	{tag: 1, name: "client", wire: wireStr, ref: func(m *Message) any { return &m.Client }},
	{tag: 2, name: "token", wire: wireStr, ref: func(m *Message) any { return &m.Token }},
	{tag: 3, name: "session", wire: wireStr, ref: func(m *Message) any { return &m.Session }},
	{tag: 4, name: "node", wire: wireStr, ref: func(m *Message) any { return &m.Node }},
	{tag: 5, name: "hb", wire: wireZigzag, ref: func(m *Message) any { return &m.HB }},
	{tag: 6, name: "proto", wire: wireInt32, ref: func(m *Message) any { return &m.Proto }},
	{tag: 7, name: "doc", wire: wireStr, ref: func(m *Message) any { return &m.Doc }},
	{tag: 8, name: "since", wire: wireZigzag, ref: func(m *Message) any { return &m.Since }},
	{tag: 9, name: "v", wire: wireZigzag, ref: func(m *Message) any { return &m.V }},
	{tag: 10, name: "pv", wire: wirePrev, ref: func(m *Message) any { return &m.PV }},
	{tag: 11, name: "op", wire: wireUvarint, ref: func(m *Message) any { return &m.Op }},
	{tag: 12, name: "base", wire: wireZigzag, ref: func(m *Message) any { return &m.Base }},
	{tag: 13, name: "hlc", wire: wireHLC, ref: func(m *Message) any { return &m.HLC }},
	{tag: 14, name: "ops", wire: wireOps, ref: func(m *Message) any { return &m.Ops }},
	{tag: 15, name: "by", wire: wireStr, ref: func(m *Message) any { return &m.By }},
	{tag: 16, name: "del", wire: wireFlag, bit: 0x01, ref: func(m *Message) any { return &m.Del }},
	{tag: 16, name: "new", wire: wireFlag, bit: 0x02, ref: func(m *Message) any { return &m.New }},
	{tag: 16, name: "dup", wire: wireFlag, bit: 0x04, ref: func(m *Message) any { return &m.Dup }},
	{tag: 16, name: "full", wire: wireFlag, bit: 0x08, ref: func(m *Message) any { return &m.Full }},
	{tag: 17, name: "data", wire: wireObject, ref: func(m *Message) any { return &m.Data }},
	{tag: 18, name: "code", wire: wireStr, ref: func(m *Message) any { return &m.Code }},
	{tag: 19, name: "msg", wire: wireStr, ref: func(m *Message) any { return &m.Msg }},
	{tag: 20, name: "details", wire: wireAnyJSON, ref: func(m *Message) any { return &m.Details }},
	{tag: 21, name: "ts", wire: wireZigzag, ref: func(m *Message) any { return &m.TS }},
	{tag: 22, name: "roles", wire: wireStrs, ref: func(m *Message) any { return &m.Roles }},
	{tag: 23, name: "h", wire: wireUvarint, ref: func(m *Message) any { return &m.H }},
	{tag: 24, name: "a", wire: wireUvarint, ref: func(m *Message) any { return &m.A }},
	{tag: 25, name: "hlc", wire: wireHLCHere, ref: func(m *Message) any { return &m.HLC }},
	{tag: noTag, name: "qid", wire: wireExt, ref: func(m *Message) any { return &m.QID }},
	{tag: noTag, name: "coll", wire: wireExt, ref: func(m *Message) any { return &m.Coll }},
	{tag: noTag, name: "query", wire: wireExt, ref: func(m *Message) any { return &m.Query }},
	{tag: noTag, name: "have", wire: wireExt, ref: func(m *Message) any { return &m.Have }},
	{tag: noTag, name: "why", wire: wireExt, ref: func(m *Message) any { return &m.Why }},
	{tag: noTag, name: "trace", wire: wireExt, ref: func(m *Message) any { return &m.Trace }},
}

const (
	tagExt = 31   // json object: the fields without a tag
	noTag  = 0xff // the tag of a field carried in ext
)

// field is one row of the table: the field's tag, its JSON name, how its
// value is laid out, and which Message field holds it (ref returns a
// pointer to it, of the Go type its wire layout reads and writes).
type field struct {
	tag  byte
	name string
	wire wire
	bit  byte // wireFlag: the field's bit in the flags byte
	ref  func(*Message) any
}

// wire is a field's value layout. Basic kinds: uvarint (LEB128), zigzag
// (signed LEB128 as protobuf sint64), str and json (uvarint byte length +
// UTF-8 / JSON text).
type wire byte

const (
	wireType    wire = iota // str: the message type, only with opcode OpNamed (*string)
	wireStr                 // str (*string or *core.Code)
	wireZigzag              // zigzag (*int64)
	wireInt32               // zigzag within int32 (*int)
	wireUvarint             // uvarint (*uint64)
	wirePrev                // zigzag, left out when it is the default (defaultPV) (*int64)
	wireHLC                 // uvarint wall ms, uvarint counter, str node; empty node: by (*clock.Timestamp)
	wireHLCHere             // uvarint wall ms, uvarint counter: the node is the server's (*clock.Timestamp, Message.Here)
	wireOps                 // uvarint count, then per op: kind u8 [str name if kind 0], str path, value (*[]merge.FieldOp)
	wireFlag                // one bit of a u8 shared by the fields with the same tag (*bool)
	wireObject              // json object (*map[string]any)
	wireAnyJSON             // json (*any)
	wireStrs                // uvarint count, then str each (*[]string)
	wireExt                 // no tag: a key of the ext object (any JSON-encodable field with omitempty)
)

// byTag holds the rows of each tag (several only for flags); the rows
// without a tag are extRows.
var byTag, extRows = func() (t [tagExt][]*field, ext []*field) {
	for i := range fields {
		if f := &fields[i]; f.wire == wireExt {
			ext = append(ext, f)
		} else {
			t[f.tag] = append(t[f.tag], f)
		}
	}
	return t, ext
}()

// hasExt reports whether a field without a tag is set (not its zero
// value); only then does the message need an ext object.
func hasExt(m *Message) bool {
	for _, f := range extRows {
		if !reflect.ValueOf(f.ref(m)).Elem().IsZero() {
			return true
		}
	}
	return false
}

// extFields renders the fields of m without a tag as a JSON object with
// sorted keys; nil when each is empty.
func extFields(m *Message) ([]byte, error) {
	var rest Message
	copyExt(&rest, m)
	b, err := json.Marshal(&rest)
	if err != nil {
		return nil, frameErr(ErrCodeNotEncodable, "%v", err)
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(b, &obj); err != nil {
		return nil, frameErr(ErrCodeNotEncodable, "%v", err)
	}
	delete(obj, "t")
	if len(obj) == 0 {
		return nil, nil
	}
	return json.Marshal(obj)
}

// copyExt sets the fields of dst without a tag to those of src.
func copyExt(dst, src *Message) {
	for _, f := range extRows {
		reflect.ValueOf(f.ref(dst)).Elem().Set(reflect.ValueOf(f.ref(src)).Elem())
	}
}
