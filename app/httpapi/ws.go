package httpapi

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/protocol"
	"github.com/open-autoglm/autoglm/app/session"
)

type liveSession struct {
	cancel context.CancelFunc
}

// wsSender writes messages through the connection's wsOut in the
// encoding the client chose: JSON text frames, or binary frames.
type wsSender struct {
	out          *wsOut
	op           byte // opText or opBinary
	encode       func(protocol.Message) ([]byte, error)
	encodeShared func(*protocol.Shared) ([]byte, error)
}

func textSender(out *wsOut) wsSender {
	return wsSender{out: out, op: opText, encode: protocol.Encode, encodeShared: (*protocol.Shared).JSON}
}

func binarySender(out *wsOut) wsSender {
	return wsSender{out: out, op: opBinary, encode: protocol.EncodeFrames, encodeShared: (*protocol.Shared).Frames}
}

func (ws wsSender) Send(_ context.Context, m protocol.Message) error {
	b, err := ws.encode(m)
	if err != nil {
		return err
	}
	return ws.out.send(ws.op, b)
}

// SendShared writes a message shared with other connections, encoded once.
func (ws wsSender) SendShared(_ context.Context, m *protocol.Shared) error {
	b, err := ws.encodeShared(m)
	if err != nil {
		return err
	}
	return ws.out.send(ws.op, b)
}

// QueueShared hands a shared message to the connection without blocking
// (the fan-out's path to an idle session).
func (ws wsSender) QueueShared(m *protocol.Shared) bool {
	b, err := ws.encodeShared(m)
	return err == nil && ws.out.queue(ws.op, b)
}

// Pending and Flush serve what QueueShared buffered.
func (ws wsSender) Pending() <-chan struct{} { return ws.out.pending }
func (ws wsSender) Flush() error             { return ws.out.flush() }

// writeGuard bounds the blocking writes on one connection by the write
// timeout and by the session's context. A write that takes longer than the
// timeout, or is under way when the context ends, closes the connection,
// which fails the write. One timer serves the connection's lifetime,
// re-armed per blocking write (the non-blocking ones, wsOut.queue, need
// none).
type writeGuard struct {
	ctx     context.Context
	close   func() // closes the connection at once
	timeout time.Duration
	timer   *time.Timer
	mu      sync.Mutex
	busy    int // writes under way
}

func newWriteGuard(ctx context.Context, closeNow func(), timeout time.Duration) (*writeGuard, func() bool) {
	g := &writeGuard{ctx: ctx, close: closeNow, timeout: timeout}
	g.timer = time.AfterFunc(time.Hour, g.expire)
	g.timer.Stop()
	return g, context.AfterFunc(ctx, g.expire)
}

func (g *writeGuard) expire() {
	g.mu.Lock()
	busy := g.busy > 0
	g.mu.Unlock()
	if busy {
		g.close()
	}
}

// write writes b to w, which must be the connection's own.
func (g *writeGuard) write(w io.Writer, b []byte) error {
	if err := g.ctx.Err(); err != nil {
		return err
	}
	g.mu.Lock()
	if g.busy++; g.busy == 1 {
		g.timer.Reset(g.timeout)
	}
	g.mu.Unlock()
	// No deadline of its own: the guard closes the connection instead.
	_, err := w.Write(b)
	g.mu.Lock()
	if g.busy--; g.busy == 0 {
		g.timer.Stop()
	}
	g.mu.Unlock()
	return err
}

// Every transport sends the deltas that watchers share with one encoding;
// the WebSocket ones also take them from the fan-out without blocking.
var (
	_ session.QueueSender  = wsSender{}
	_ session.SharedSender = (*sseSender)(nil)
	_ session.SharedSender = (*pollBuffer)(nil)
)

// decodeBinary reads the messages of one binary WebSocket message; a frame
// that does not decode ends the session as a protocol error whose reason
// names the frame error.
func decodeBinary(b []byte, max int64) ([]protocol.Message, *session.Close) {
	ms, err := protocol.DecodeFrames(b, int(max))
	if err != nil {
		reason := "malformed binary frame"
		var fe *protocol.FrameError
		if errors.As(err, &fe) {
			reason = "binary frame: " + fe.Code
		}
		return nil, &session.Close{Code: protocol.CloseProtocolError, Reason: reason}
	}
	return ms, nil
}

func (s *Server) serveWS(w http.ResponseWriter, r *http.Request) {
	if s.draining.Load() {
		s.fail(w, r, core.ErrShuttingDown)
		return
	}
	// The origin policy is checked here, before the upgrade, so a refusal
	// is logged with its reason like on the fallback transports.
	if s.refuseOrigin(w, r) {
		return
	}
	release, err := s.admitAddr(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	defer release()
	opts := &websocket.AcceptOptions{Subprotocols: []string{protocol.SubprotocolBinary, protocol.SubprotocolJSON}, InsecureSkipVerify: true}
	// Data frames bypass the library's writer (wsOut); it keeps the
	// handshake, the reading, and the control frames.
	out := newWSOut()
	conn, err := websocket.Accept(hijackResponse{w, out}, r, opts)
	if err != nil {
		return // Accept has answered the request
	}
	// The library closes with the standard 1009 past its limit; up to twice
	// the configured size the session answers with its own code (4503).
	conn.SetReadLimit(2 * s.MaxBody)

	ctx, cancel := context.WithCancel(context.Background())
	defer s.track(cancel, "ws")()
	sopt := s.sessionOptions(s.newSessionID())
	// The session stays transport-independent: only the sender and the
	// reader below know which encoding the client chose.
	binary := conn.Subprotocol() == protocol.SubprotocolBinary
	guard, stopGuard := newWriteGuard(ctx, func() { _ = conn.CloseNow() }, s.WriteTimeout)
	defer stopGuard()
	out.guard = guard
	sender := textSender(out)
	if binary {
		sender = binarySender(out)
	}
	sess := session.New(sopt, s.Engine, s.Hub, sender)
	// hello must arrive soon after the upgrade: an idle upgraded socket
	// costs memory and a connection slot.
	helloDue := time.AfterFunc(s.helloTimeout(), func() {
		sess.Fail(protocol.CloseHelloTimeout, "no hello in time")
	})
	defer helloDue.Stop()

	readCtx, stopRead := context.WithCancel(context.Background())
	defer stopRead()
	go func() {
		defer cancel()
		for {
			typ, b, err := conn.Read(readCtx)
			if err != nil {
				return
			}
			helloDue.Stop() // the first message is the hello or ends the session
			if int64(len(b)) > s.MaxBody {
				sess.Fail(protocol.CloseTooLarge, "message too large")
				return
			}
			if binary {
				if typ != websocket.MessageBinary {
					sess.Fail(protocol.CloseUnsupported, "text frames on the binary subprotocol")
					return
				}
				ms, fail := decodeBinary(b, s.MaxBody)
				if fail != nil {
					sess.Fail(fail.Code, fail.Reason)
					return
				}
				for _, m := range ms {
					if !sess.Receive(ctx, m) {
						return
					}
				}
				continue
			}
			if typ != websocket.MessageText {
				sess.Fail(protocol.CloseUnsupported, "binary frames need the binary subprotocol")
				return
			}
			m, err := protocol.Decode(b)
			if err != nil {
				sess.Fail(protocol.CloseProtocolError, "malformed message")
				return
			}
			if !sess.Receive(ctx, m) {
				return
			}
		}
	}()
	c := sess.Run(ctx)
	// Close first: cancelling the reader's context would drop the
	// connection without the close frame that tells the client why.
	_ = conn.Close(websocket.StatusCode(c.Code), c.Reason)
	stopRead()
}

// originHosts turns configured origins ("https://app.example.com") into the
// host patterns the WebSocket library matches.
func originHosts(origins []string) []string {
	out := make([]string, 0, len(origins))
	for _, o := range origins {
		if u, err := url.Parse(o); err == nil && u.Host != "" {
			out = append(out, u.Host)
		} else {
			out = append(out, o)
		}
	}
	return out
}
