// Package protocol defines the sync protocol's wire messages (JSON text
// frames; see docs/protocol.md) and its connection close codes. It does no
// I/O.
package protocol

import (
	"encoding/json"
	"strconv"
	"strings"

	"github.com/open-autoglm/autoglm/app/clock"
	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/merge"
)

// Version is the newest protocol version; a hello may ask for any version
// from MinVersion to Version (none: 1) and the welcome answers with it.
// Version 2 adds the compact forms of deltas and acks (docs/protocol.md,
// "Compact forms"): a subscription handle h for the document, an author
// number a for by, an hlc without the server's node, and a single set as
// "set" (JSON) or a raw string (binary).
const (
	Version    = 2
	MinVersion = 1
)

// Message types ("t").
const (
	// client → server
	THello = "hello"
	TSub   = "sub"
	TUnsub = "unsub"
	TOp    = "op"
	// server → client
	TWelcome = "welcome"
	TSnap    = "snap"
	TDelta   = "delta"
	TSynced  = "synced"
	TAck     = "ack"
	TReject  = "reject"
	TError   = "error"
	// live queries (server → client; sub, unsub, snap, delta and synced
	// carry the query's qid)
	TAdded   = "added"
	TRemoved = "removed"
	// both ways
	TPresence = "presence"
	TAuth     = "auth" // client: a fresh token; server: accepted, with its expiry in ts
	TPing     = "ping"
	TPong     = "pong"
)

// Message is every protocol message; T selects which fields mean something.
// One flat struct keeps decoding a single pass and the frames small.
type Message struct {
	T string `json:"t"`

	// hello / welcome
	Client  string   `json:"client,omitempty"`
	Token   string   `json:"token,omitempty"`
	Roles   []string `json:"roles,omitempty"`
	Session string   `json:"session,omitempty"`
	Node    string   `json:"node,omitempty"`
	HB      int64    `json:"hb,omitempty"` // heartbeat interval, ms
	Proto   int      `json:"proto,omitempty"`

	// document traffic
	Doc   string          `json:"doc,omitempty"`
	Since int64           `json:"since,omitempty"`
	Full  bool            `json:"full,omitempty"` // sub: whole document on every change (baseline/compat mode)
	V     int64           `json:"v,omitempty"`
	PV    int64           `json:"pv,omitempty"`
	Op    uint64          `json:"op,omitempty"`
	Base  int64           `json:"base,omitempty"`
	HLC   clock.Timestamp `json:"hlc,omitzero"`
	Ops   []merge.FieldOp `json:"ops,omitzero"` // an empty list (the merge dropped everything) is sent
	By    string          `json:"by,omitempty"`
	Del   bool            `json:"del,omitempty"`
	New   bool            `json:"new,omitempty"`
	Dup   bool            `json:"dup,omitempty"`
	Data  map[string]any  `json:"data,omitempty"`

	// Compact forms (proto 2): H is the handle the client gave the
	// document in its sub (the message then leaves doc out); A numbers the
	// author for this connection (by travels with it the first time only).
	H uint64 `json:"h,omitempty"`
	A uint64 `json:"a,omitempty"`
	// Here says the hlc's node is the server's own (the welcome's node)
	// and was left out. Compact selects the proto 2 forms when encoding.
	// Neither is a field of its own on the wire.
	Here    bool `json:"-"`
	Compact bool `json:"-"`

	// live queries: sub names a collection and a query (see package
	// query) under a client-chosen qid, with the versions the client
	// already has; every message of the query carries the qid, and removed
	// says why the document left the result.
	QID   string           `json:"qid,omitempty"`
	Coll  string           `json:"coll,omitempty"`
	Query json.RawMessage  `json:"query,omitempty"`
	Have  map[string]int64 `json:"have,omitempty"`
	Why   string           `json:"why,omitempty"`

	// errors
	Code    core.Code `json:"code,omitempty"`
	Msg     string    `json:"msg,omitempty"`
	Details any       `json:"details,omitempty"`

	// heartbeats
	TS int64 `json:"ts,omitempty"`

	// Trace is an op's W3C traceparent (optional): the op's span on the
	// server is a child of the client's span it names.
	Trace string `json:"trace,omitempty"`
}

// Delta renders a change as a delta message. The op id is left out: only
// its author can match it, and the author gets an ack instead (a delta of
// the author's own op, after a reconnect, sets Op itself).
func Delta(c core.Change) Message {
	return Message{T: TDelta, Doc: c.Doc, V: c.Version, PV: c.Prev, Ops: c.Ops, By: c.Author,
		HLC: c.HLC, Del: c.Deleted, New: c.Created}
}

// CompactFor rewrites a delta or an ack into the proto 2 forms for one
// connection: h (when not 0) replaces doc, a (when not 0) numbers the
// author and by is kept only when define is set (the first time the
// connection hears of a), and an hlc whose node is the author's (by; on an
// ack the client itself, named by client) or the server's (node) leaves
// its node out. Other message types are returned unchanged.
func CompactFor(m Message, h, a uint64, define bool, node, client string) Message {
	if m.T != TDelta && m.T != TAck {
		return m
	}
	m.Compact = true
	author := m.By
	if m.T == TAck {
		author = client
	}
	if h != 0 {
		m.Doc, m.H = "", h
	}
	if a != 0 && m.By != "" {
		m.A = a
		if !define {
			m.By = ""
		}
	}
	switch n := m.HLC.Node; {
	case m.HLC.IsZero() || n == "":
	case n == author:
		m.HLC.Node = ""
	case n == node:
		m.HLC.Node, m.Here = "", true
	}
	return m
}

// Change reads a delta message back into a change (clients use it).
func (m Message) Change() core.Change {
	return core.Change{Doc: m.Doc, Version: m.V, Prev: m.PV, Ops: m.Ops, Author: m.By,
		OpID: m.Op, HLC: m.HLC, Deleted: m.Del, Created: m.New}
}

// ErrorMessage renders err for a client: its code, a safe message and any
// structured details.
func ErrorMessage(t string, err error) Message {
	return Message{T: t, Code: core.CodeOf(err), Msg: core.PublicMessage(err), Details: core.DetailsOf(err)}
}

// Decode parses one JSON message.
func Decode(b []byte) (Message, error) {
	if err := CheckDepth(b, MaxDepth); err != nil {
		return Message{}, err
	}
	var w wireJSON
	if err := json.Unmarshal(b, &w); err != nil {
		return Message{}, core.Errorf(core.CodeBadRequest, "malformed message: %v", err)
	}
	m := w.Message
	if m.T == "" {
		return Message{}, core.Errorf(core.CodeBadRequest, "message has no type \"t\"")
	}
	m.PV = defaultPV(m.T, m.V)
	if w.PV != nil {
		m.PV = *w.PV
	}
	if w.HLC != "" {
		hlc := w.HLC
		if strings.Count(hlc, ".") == 1 && (m.By != "" || m.A != 0 || m.T == TAck) {
			hlc += "." + m.By // the author's own stamp (compact forms: by may follow from a)
		} else if strings.HasSuffix(hlc, ".") && strings.Count(hlc, ".") == 2 {
			m.Here = true // the server's own stamp
		}
		ts, err := clock.Parse(hlc)
		if err != nil {
			return Message{}, core.Errorf(core.CodeBadRequest, "malformed message: hlc: %v", err)
		}
		m.HLC = ts
	}
	if w.Set != nil {
		if m.Ops != nil || len(w.Set) != 1 {
			return Message{}, core.Errorf(core.CodeBadRequest, "malformed message: set names one field, without ops")
		}
		for path, v := range w.Set {
			m.Ops = []merge.FieldOp{{Op: merge.KindSet, Path: path, Value: v}}
		}
	}
	return m, nil
}

// wireJSON is a Message as the JSON encoding carries it: what a receiver
// can derive is left out. pv of a delta or an ack is present only when it
// is not v-1 (as in the binary encoding), and an hlc whose node is the
// author (by) is written "wall.counter". In the compact forms an hlc of
// the server's own node is written "wall.counter." and a single set as
// "set":{path: value}.
type wireJSON struct {
	Message
	PV  *int64                     `json:"pv,omitempty"`
	HLC string                     `json:"hlc,omitempty"`
	Set map[string]json.RawMessage `json:"set,omitempty"`
}

// Encode renders a message as JSON.
func Encode(m Message) ([]byte, error) {
	w := wireJSON{Message: m}
	if m.PV != defaultPV(m.T, m.V) {
		w.PV = &m.PV
	}
	if m.HLC.Wall != 0 || m.HLC.Logical != 0 || m.HLC.Node != "" {
		short := strconv.FormatInt(m.HLC.Wall, 10) + "." + strconv.FormatUint(uint64(m.HLC.Logical), 10)
		switch {
		case m.Here:
			w.HLC = short + "."
		case m.By != "" && m.HLC.Node == m.By || m.Compact && m.HLC.Node == "":
			w.HLC = short
		default:
			w.HLC = m.HLC.String()
		}
	}
	if m.Compact && len(m.Ops) == 1 && m.Ops[0].Op == merge.KindSet && len(m.Ops[0].Value) > 0 {
		w.Set = map[string]json.RawMessage{m.Ops[0].Path: m.Ops[0].Value}
		w.Message.Ops = nil
	}
	return json.Marshal(w)
}

// WebSocket close codes. 4000–4499: the client may reconnect (with backoff)
// and resume; 4500–4999: it must not reconnect without changing something
// (credentials, code). Documented in docs/protocol.md, which also lists 4005
// and 4502: the server never sends those, the JS client reports them for a
// fallback request answered HTTP 5xx or 403.
const (
	CloseShuttingDown     = 4000 // replica draining; reconnect, possibly elsewhere
	CloseHeartbeatTimeout = 4001 // no traffic within the heartbeat window
	CloseSlowConsumer     = 4002 // did not read its messages fast enough
	CloseTokenExpired     = 4003 // refresh the token, then reconnect
	CloseRateLimited      = 4004 // too many messages; reconnect after a pause
	CloseHelloTimeout     = 4006 // no hello within the hello deadline after the upgrade

	CloseProtocolError = 4500 // malformed or unexpected message
	CloseUnauthorized  = 4501 // missing or invalid credentials
	CloseTooLarge      = 4503 // message over the size limit
	CloseUnsupported   = 4504 // protocol version or encoding not supported
)

// Reconnectable reports whether a close code allows reconnecting.
func Reconnectable(code int) bool {
	return code >= 4000 && code < 4500 || code == 1001 || code == 1006 || code == 1011 || code == 1012
}
