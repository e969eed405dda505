package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/protocol"
)

// Conn is one sync connection at the wire level, without the client's
// documents, queue or reconnects: the WebSocket in the encoding the server
// chose, after hello and welcome, with what protocol version 2 makes
// per-connection state (the documents behind the handles its subs gave, the
// authors behind the numbers the server gave, the replica's node). The
// Client is built on it; tools that need many lean connections, such as a
// load generator, use it directly. Send and Sub are safe for concurrent
// use; reads belong to one goroutine.
type Conn struct {
	ws      *websocket.Conn
	bin     bool
	proto   int
	welcome protocol.Message
	early   []protocol.Message // what came with the welcome, not yet read

	mu      sync.Mutex
	docs    map[uint64]string // handle → document
	lastH   uint64
	authors map[uint64]string
}

// ConnOptions configure DialConn.
type ConnOptions struct {
	// Subprotocols are offered in order of preference; none: the binary
	// encoding, then JSON. The connection speaks the binary encoding
	// exactly when the server chose protocol.SubprotocolBinary.
	Subprotocols []string
	HTTPClient   *http.Client
	Header       http.Header
	// Hello is said after the upgrade (its T is set here). Proto 0 asks for
	// protocol.Version; a server that refuses a version above
	// protocol.MinVersion (close 4504) is dialled again with MinVersion.
	Hello protocol.Message
}

// maxRead bounds one WebSocket message read.
const maxRead = 64 << 20

// DialConn connects to the sync endpoint url (ws://host/v1/sync, see
// protocol.SyncURL), says hello and waits for the welcome.
func DialConn(ctx context.Context, url string, o ConnOptions) (*Conn, error) {
	protos := o.Subprotocols
	if len(protos) == 0 {
		protos = []string{protocol.SubprotocolBinary, protocol.SubprotocolJSON}
	}
	hello := o.Hello
	hello.T = protocol.THello
	if hello.Proto == 0 {
		hello.Proto = protocol.Version
	}
	for {
		ws, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{
			Subprotocols: protos, HTTPClient: o.HTTPClient, HTTPHeader: o.Header,
		})
		if err != nil {
			return nil, fmt.Errorf("dial %s: %w", url, err)
		}
		ws.SetReadLimit(maxRead)
		c := &Conn{ws: ws, bin: ws.Subprotocol() == protocol.SubprotocolBinary, proto: hello.Proto,
			docs: map[uint64]string{}, authors: map[uint64]string{}}
		err = c.greet(ctx, hello)
		if err == nil {
			return c, nil
		}
		ws.CloseNow()
		if websocket.CloseStatus(err) != protocol.CloseUnsupported || hello.Proto <= protocol.MinVersion {
			return nil, err
		}
		// A server older than the compact forms: speak version 1.
		hello.Proto = protocol.MinVersion
	}
}

// greet says hello and reads the welcome, keeping what came with it.
func (c *Conn) greet(ctx context.Context, hello protocol.Message) error {
	if err := c.Send(ctx, hello); err != nil {
		return err
	}
	_, b, err := c.ws.Read(ctx)
	if err != nil {
		return err
	}
	ms, err := c.decode(b)
	if err != nil {
		return err
	}
	if ms[0].T != protocol.TWelcome {
		return fmt.Errorf("expected welcome, got %q (%s %s)", ms[0].T, ms[0].Code, ms[0].Msg)
	}
	c.welcome = ms[0]
	c.early = ms[1:]
	for i := range c.early {
		c.restore(&c.early[i])
	}
	return nil
}

// Welcome is the server's welcome (the client id it assigned, its node,
// the heartbeat interval).
func (c *Conn) Welcome() protocol.Message { return c.welcome }

// Proto is the protocol version the hello asked for and the server
// accepted.
func (c *Conn) Proto() int { return c.proto }

// Subprotocol names the connection's encoding (as the server chose it).
func (c *Conn) Subprotocol() string { return c.ws.Subprotocol() }

// Send writes m in the connection's encoding.
func (c *Conn) Send(ctx context.Context, m protocol.Message) error {
	if c.bin {
		b, err := protocol.EncodeFrames(m)
		if err != nil {
			return err
		}
		return c.ws.Write(ctx, websocket.MessageBinary, b)
	}
	b, err := protocol.Encode(m)
	if err != nil {
		return err
	}
	return c.ws.Write(ctx, websocket.MessageText, b)
}

// Sub sends the sub m of a document under its handle m.H, or, when m.H is
// 0, under the next handle, which it returns. From then on the deltas and
// acks that name the document by the handle alone are read with its name.
func (c *Conn) Sub(ctx context.Context, m protocol.Message) (uint64, error) {
	if m.T != protocol.TSub || m.Doc == "" {
		return 0, fmt.Errorf("not a document sub: %q %q", m.T, m.Doc)
	}
	c.mu.Lock()
	if m.H == 0 {
		m.H = c.lastH + 1
	}
	c.lastH = max(c.lastH, m.H)
	c.docs[m.H] = m.Doc
	c.mu.Unlock()
	return m.H, c.Send(ctx, m)
}

// Read returns the messages of the next WebSocket message (at least one;
// the messages that came with the welcome first) and that message's size
// (0 for those that came with the welcome). The compact forms of protocol
// version 2 are restored: a delta or an ack names its document, its author
// and the full stamp, as in version 1.
func (c *Conn) Read(ctx context.Context) ([]protocol.Message, int, error) {
	if ms := c.early; len(ms) > 0 {
		c.early = nil
		return ms, 0, nil
	}
	_, b, err := c.ws.Read(ctx)
	if err != nil {
		return nil, 0, err
	}
	ms, err := c.decode(b)
	if err != nil {
		return nil, 0, err
	}
	for i := range ms {
		c.restore(&ms[i])
	}
	return ms, len(b), nil
}

func (c *Conn) decode(b []byte) ([]protocol.Message, error) {
	if c.bin {
		return decodeFrames(b)
	}
	m, err := protocol.Decode(b)
	return []protocol.Message{m}, err
}

// decodeFrames reads a binary WebSocket message: one or more messages.
func decodeFrames(b []byte) ([]protocol.Message, error) {
	ms, err := protocol.DecodeFrames(b, len(b)+1)
	if err == nil && len(ms) == 0 {
		err = errors.New("empty binary message")
	}
	return ms, err
}

// restore puts back what the compact forms (protocol version 2) leave out
// of a delta or an ack: the document behind a handle, the author behind a
// number, and the node of a stamp (the author's, on an ack this
// connection's client's, or the replica's).
func (c *Conn) restore(m *protocol.Message) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if name, ok := c.docs[m.H]; m.H != 0 && ok {
		m.Doc = name
	}
	if m.A != 0 {
		if m.By != "" {
			c.authors[m.A] = m.By
		} else {
			m.By = c.authors[m.A]
		}
	}
	if !m.HLC.IsZero() && m.HLC.Node == "" {
		switch {
		case m.Here:
			m.HLC.Node = c.welcome.Node
		case m.T == protocol.TAck:
			m.HLC.Node = c.welcome.Client
		default:
			m.HLC.Node = m.By
		}
	}
	m.H, m.A, m.Here, m.Compact = 0, 0, false, false
}

// Head is the part of a server message that routes it: its type, document
// and version, the op an ack or reject answers, an error's code, a ping's
// stamp. ReadHeads decodes a JSON message into a Head alone, leaving out
// ops, data and stamps, which keeps a connection that only counts and
// times deliveries cheap.
type Head struct {
	T    string    `json:"t"`
	Doc  string    `json:"doc"`
	V    int64     `json:"v"`
	Op   uint64    `json:"op"`
	Dup  bool      `json:"dup"`
	Code core.Code `json:"code"`
	Msg  string    `json:"msg"`
	TS   int64     `json:"ts"`
	H    uint64    `json:"h"`
}

func headOf(m protocol.Message) Head {
	return Head{T: m.T, Doc: m.Doc, V: m.V, Op: m.Op, Dup: m.Dup, Code: m.Code, Msg: m.Msg, TS: m.TS, H: m.H}
}

// ReadHeads appends to dst the heads of the messages of the next WebSocket
// message (the messages that came with the welcome first). A head given
// by a handle alone is named by its document.
func (c *Conn) ReadHeads(ctx context.Context, dst []Head) ([]Head, error) {
	if ms := c.early; len(ms) > 0 {
		c.early = nil
		for _, m := range ms {
			dst = append(dst, headOf(m))
		}
		return dst, nil
	}
	_, b, err := c.ws.Read(ctx)
	if err != nil {
		return dst, err
	}
	n := len(dst)
	if c.bin {
		ms, err := decodeFrames(b)
		if err != nil {
			return dst, err
		}
		for _, m := range ms {
			dst = append(dst, headOf(m))
		}
	} else {
		var h Head
		if err := json.Unmarshal(b, &h); err != nil {
			return dst, err
		}
		dst = append(dst, h)
	}
	c.mu.Lock()
	for i := n; i < len(dst); i++ {
		if h := &dst[i]; h.Doc == "" && h.H != 0 {
			h.Doc = c.docs[h.H]
		}
	}
	c.mu.Unlock()
	return dst, nil
}

// ServeHeads reads heads until the connection fails or ctx ends (the
// error), answers the server's pings, and hands every other head to
// handle with the time its WebSocket message was read.
func (c *Conn) ServeHeads(ctx context.Context, handle func(now time.Time, h Head)) error {
	var hs []Head
	for {
		var err error
		if hs, err = c.ReadHeads(ctx, hs[:0]); err != nil {
			return err
		}
		now := time.Now()
		for _, h := range hs {
			if h.T == protocol.TPing {
				_ = c.Send(ctx, protocol.Message{T: protocol.TPong, TS: h.TS})
				continue
			}
			handle(now, h)
		}
	}
}

// Close ends the connection with a normal closure.
func (c *Conn) Close(reason string) error {
	return c.ws.Close(websocket.StatusNormalClosure, reason)
}

// CloseNow breaks the connection without a close handshake.
func (c *Conn) CloseNow() error { return c.ws.CloseNow() }
