package httpapi

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"time"

	"github.com/coder/websocket"

	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/protocol"
	"github.com/open-autoglm/autoglm/app/session"
)

type liveSession struct {
	cancel context.CancelFunc
}

// wsSender writes JSON text frames with a deadline per write.
type wsSender struct {
	conn    *websocket.Conn
	timeout time.Duration
}

func (ws wsSender) Send(ctx context.Context, m protocol.Message) error {
	return ws.write(ctx, websocket.MessageText)(protocol.Encode(m))
}

// SendShared writes a message shared with other connections, encoded once.
func (ws wsSender) SendShared(ctx context.Context, m *protocol.Shared) error {
	return ws.write(ctx, websocket.MessageText)(m.JSON())
}

// write returns a function writing an encoded message (or failing with the
// encoding's error) as one WebSocket message of type typ.
func (ws wsSender) write(ctx context.Context, typ websocket.MessageType) func([]byte, error) error {
	return func(b []byte, err error) error {
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(ctx, ws.timeout)
		defer cancel()
		return ws.conn.Write(ctx, typ, b)
	}
}

// wsBinarySender writes each message as binary frames.
type wsBinarySender wsSender

func (ws wsBinarySender) Send(ctx context.Context, m protocol.Message) error {
	return wsSender(ws).write(ctx, websocket.MessageBinary)(protocol.EncodeFrames(m))
}

// SendShared writes a message shared with other connections, encoded once.
func (ws wsBinarySender) SendShared(ctx context.Context, m *protocol.Shared) error {
	return wsSender(ws).write(ctx, websocket.MessageBinary)(m.Frames())
}

// Every transport sends the deltas that watchers share with one encoding.
var (
	_ session.SharedSender = wsSender{}
	_ session.SharedSender = wsBinarySender{}
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
	conn, err := websocket.Accept(w, r, opts)
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
	var sender session.Sender = wsSender{conn: conn, timeout: s.WriteTimeout}
	if binary {
		sender = wsBinarySender{conn: conn, timeout: s.WriteTimeout}
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
