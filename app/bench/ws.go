package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/open-autoglm/autoglm/app/protocol"
)

// wire is the part of a server message the bench looks at; decoding only
// these fields keeps the load generator's own CPU use low.
type wire struct {
	T    string `json:"t"`
	Doc  string `json:"doc"`
	V    int64  `json:"v"`
	Op   uint64 `json:"op"`
	Dup  bool   `json:"dup"`
	Code string `json:"code"`
	Msg  string `json:"msg"`
	TS   int64  `json:"ts"`
	H    uint64 `json:"h"`
}

// wsConn is one sync connection in either encoding.
type wsConn struct {
	c   *websocket.Conn
	bin bool
	// docs maps the handles given in subs to document names: a proto 2
	// delta names its document by the handle alone.
	mu   sync.Mutex
	docs map[uint64]string
}

// sub watches doc under the next handle.
func (w *wsConn) sub(ctx context.Context, doc string, full bool) error {
	w.mu.Lock()
	if w.docs == nil {
		w.docs = map[uint64]string{}
	}
	h := uint64(len(w.docs) + 1)
	w.docs[h] = doc
	w.mu.Unlock()
	return w.send(ctx, protocol.Message{T: protocol.TSub, Doc: doc, H: h, Full: full})
}

// named fills in the document of messages that carry only a handle.
func (w *wsConn) named(ms []wire) []wire {
	w.mu.Lock()
	defer w.mu.Unlock()
	for i := range ms {
		if ms[i].Doc == "" && ms[i].H != 0 {
			ms[i].Doc = w.docs[ms[i].H]
		}
	}
	return ms
}

// dialWS connects, says hello and waits for welcome.
func dialWS(ctx context.Context, base string, hc *http.Client, bin bool, client string) (*wsConn, error) {
	proto := protocol.SubprotocolJSON
	if bin {
		proto = protocol.SubprotocolBinary
	}
	c, _, err := websocket.Dial(ctx, protocol.SyncURL(base), &websocket.DialOptions{
		HTTPClient: hc, Subprotocols: []string{proto}, CompressionMode: websocket.CompressionDisabled,
	})
	if err != nil {
		return nil, err
	}
	if c.Subprotocol() != proto {
		c.CloseNow()
		return nil, fmt.Errorf("server did not accept subprotocol %s", proto)
	}
	c.SetReadLimit(64 << 20)
	w := &wsConn{c: c, bin: bin}
	if err := w.send(ctx, protocol.Message{T: protocol.THello, Client: client, Proto: protocol.Version}); err != nil {
		c.CloseNow()
		return nil, err
	}
	ms, err := w.read(ctx)
	if err != nil {
		c.CloseNow()
		return nil, err
	}
	if len(ms) == 0 || ms[0].T != protocol.TWelcome {
		c.CloseNow()
		return nil, fmt.Errorf("expected welcome, got %+v", ms)
	}
	return w, nil
}

func (w *wsConn) send(ctx context.Context, m protocol.Message) error {
	if w.bin {
		b, err := protocol.EncodeFrames(m)
		if err != nil {
			return err
		}
		return w.c.Write(ctx, websocket.MessageBinary, b)
	}
	b, err := protocol.Encode(m)
	if err != nil {
		return err
	}
	return w.c.Write(ctx, websocket.MessageText, b)
}

func (w *wsConn) read(ctx context.Context) ([]wire, error) {
	typ, b, err := w.c.Read(ctx)
	if err != nil {
		return nil, err
	}
	if typ == websocket.MessageBinary {
		ms, err := protocol.DecodeFrames(b, 64<<20)
		if err != nil {
			return nil, err
		}
		out := make([]wire, len(ms))
		for i, m := range ms {
			out[i] = wire{T: m.T, Doc: m.Doc, V: m.V, Op: m.Op, Dup: m.Dup, Code: string(m.Code), Msg: m.Msg, TS: m.TS, H: m.H}
		}
		return w.named(out), nil
	}
	var m wire
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	return w.named([]wire{m}), nil
}

// pong answers a server ping so the session does not time out.
func (w *wsConn) pong(ctx context.Context, ts int64) {
	_ = w.send(ctx, protocol.Message{T: protocol.TPong, TS: ts})
}

// serve reads until the connection fails or ctx ends (the error), answers
// the server's heartbeats, and hands every other message to handle with the
// time its frame was read.
func (w *wsConn) serve(ctx context.Context, handle func(now time.Time, m wire)) error {
	for {
		ms, err := w.read(ctx)
		if err != nil {
			return err
		}
		now := time.Now()
		for _, m := range ms {
			if m.T == protocol.TPing {
				w.pong(ctx, m.TS)
				continue
			}
			handle(now, m)
		}
	}
}

func (w *wsConn) close() { _ = w.c.Close(websocket.StatusNormalClosure, "bench done") }
