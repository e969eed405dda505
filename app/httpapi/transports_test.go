package httpapi_test

// The SSE, long-poll and binary WebSocket transports against the service in
// process (servicetest): subscribe, op, ack, live delta, resume with since,
// retried ops answered dup, and the errors of each transport.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/google/uuid"

	"github.com/open-autoglm/autoglm/app/config"
	"github.com/open-autoglm/autoglm/app/internal/servicetest"
	"github.com/open-autoglm/autoglm/app/internal/testutil"
	"github.com/open-autoglm/autoglm/app/merge"
	"github.com/open-autoglm/autoglm/app/protocol"
)

var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

type httpResult struct {
	status int
	code   string
	body   []byte
	header http.Header
}

func call(t *testing.T, method, u, ctype string, body []byte, hdr ...string) httpResult {
	t.Helper()
	req, err := http.NewRequest(method, u, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	var e struct {
		Error struct{ Code string } `json:"error"`
	}
	_ = json.Unmarshal(b, &e)
	return httpResult{status: res.StatusCode, code: e.Error.Code, body: b, header: res.Header}
}

func wantErr(t *testing.T, r httpResult, status int, code string) {
	t.Helper()
	if r.status != status || r.code != code {
		t.Fatalf("got %d %q, want %d %q: %s", r.status, r.code, status, code, r.body)
	}
}

func msgs(ms ...string) []byte { return []byte("[" + strings.Join(ms, ",") + "]") }

func patch(t *testing.T, base, doc, client string, opID int, field string, value any) {
	t.Helper()
	v, _ := json.Marshal(value)
	r := call(t, "PATCH", base+"/v1/docs/"+doc, "application/json",
		[]byte(fmt.Sprintf(`{"ops":[{"op":"set","path":%q,"value":%s}]}`, field, v)),
		"X-Client-ID", client, "X-Op-ID", fmt.Sprint(opID), "X-Roles", "editor")
	if r.status >= 300 {
		t.Fatalf("patch: %d %s", r.status, r.body)
	}
}

// bearer is the Authorization header of token (none for "").
func bearer(token string) []string {
	if token == "" {
		return nil
	}
	return []string{"Authorization", "Bearer " + token}
}

// sseStream reads one event stream; pings are answered with pongs, as a
// client does. Posts carry token, when set.
type sseStream struct {
	base, session string
	token         string
	welcome       protocol.Message
	events        chan sseEvent
	cancel        context.CancelFunc
}

type sseEvent struct {
	name string
	data string
}

func openSSE(t *testing.T, base, hello string) *sseStream {
	t.Helper()
	return openSSEAs(t, base, hello, "")
}

// openSSEAs opens an event stream whose later posts carry token.
func openSSEAs(t *testing.T, base, hello, token string) *sseStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, "GET", base+"/v1/events?hello="+url.QueryEscape(hello), nil)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != 200 || res.Header.Get("Content-Type") != "text/event-stream" {
		b, _ := io.ReadAll(res.Body)
		t.Fatalf("event stream: %d %s %s", res.StatusCode, res.Header.Get("Content-Type"), b)
	}
	s := &sseStream{base: base, token: token, events: make(chan sseEvent, 64), cancel: cancel}
	go func() {
		defer close(s.events)
		defer res.Body.Close()
		sc := bufio.NewScanner(res.Body)
		ev := sseEvent{name: "message"}
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if ev.data != "" {
					s.events <- ev
				}
				ev = sseEvent{name: "message"}
			case strings.HasPrefix(line, "data: "):
				ev.data += strings.TrimPrefix(line, "data: ")
			case strings.HasPrefix(line, "event: "):
				ev.name = strings.TrimPrefix(line, "event: ")
			}
		}
	}()
	w := s.next(t)
	if w.T != protocol.TWelcome || !uuidRE.MatchString(w.Session) {
		t.Fatalf("first event: %+v", w)
	}
	s.session, s.welcome = w.Session, w
	return s
}

// next returns the next message that is not a ping.
func (s *sseStream) next(t *testing.T) protocol.Message {
	t.Helper()
	for {
		ev := s.event(t, "event stream ended")
		if ev.name == "close" {
			t.Fatalf("stream closed: %s", ev.data)
		}
		m, err := protocol.Decode([]byte(ev.data))
		if err != nil {
			t.Fatal(err)
		}
		if m.T != protocol.TPing {
			return m
		}
		s.post(t, fmt.Sprintf(`{"t":"pong","ts":%d}`, m.TS))
	}
}

// closed waits for the close event.
func (s *sseStream) closed(t *testing.T) (code int, reason string) {
	t.Helper()
	for {
		if ev := s.event(t, "stream ended without a close event"); ev.name == "close" {
			var c struct {
				Code   int
				Reason string
			}
			_ = json.Unmarshal([]byte(ev.data), &c)
			return c.Code, c.Reason
		}
	}
}

// event returns the next event, waiting up to 10s for it; the test fails
// with ended when the stream ends first.
func (s *sseStream) event(t *testing.T, ended string) sseEvent {
	t.Helper()
	select {
	case ev, ok := <-s.events:
		if !ok {
			t.Fatal(ended)
		}
		return ev
	case <-time.After(10 * time.Second):
		t.Fatal("no event within 10s")
	}
	return sseEvent{}
}

func (s *sseStream) post(t *testing.T, ms ...string) {
	t.Helper()
	r := call(t, "POST", s.base+"/v1/events/"+s.session, "application/json", msgs(ms...), bearer(s.token)...)
	if r.status != http.StatusNoContent {
		t.Fatalf("post: %d %s", r.status, r.body)
	}
}

func wantMsg(t *testing.T, m protocol.Message, typ string, v int64) {
	t.Helper()
	if m.T != typ || m.V != v {
		t.Fatalf("got %+v, want %s v%d", m, typ, v)
	}
}

// startTransport starts a replica for a transport's test and names a new
// document and the hello of a new client, both named after the transport.
func startTransport(t *testing.T, transport string) (r *servicetest.Replica, doc, hello string) {
	r = servicetest.Start(t, servicetest.Options{})
	return r, "forms/" + transport + "-" + uuid.NewString()[:8], helloFor(transport + "-" + uuid.NewString()[:8])
}

func TestSSE(t *testing.T) {
	t.Parallel()
	r, doc, hello := startTransport(t, "sse")

	t.Run("SubscribeOpAckDelta", func(t *testing.T) {
		s := openSSE(t, r.URL(), hello)
		s.post(t, fmt.Sprintf(`{"t":"sub","doc":%q}`, doc))
		wantMsg(t, s.next(t), protocol.TSynced, 0)
		s.post(t, fmt.Sprintf(`{"t":"op","doc":%q,"op":1,"ops":[{"op":"set","path":"title","value":"one"}]}`, doc))
		ack := s.next(t)
		wantMsg(t, ack, protocol.TAck, 1)
		if ack.Op != 1 || !ack.New {
			t.Fatalf("ack: %+v", ack)
		}
		patch(t, r.URL(), doc, "rest-x", 1, "notes", "two")
		d := s.next(t)
		wantMsg(t, d, protocol.TDelta, 2)
		if d.By != "rest-x" || d.PV != 1 {
			t.Fatalf("delta: %+v", d)
		}
		s.cancel()
	})
	t.Run("ResumeWithSinceAndDup", func(t *testing.T) {
		patch(t, r.URL(), doc, "rest-x", 2, "notes", "three")
		s := openSSE(t, r.URL(), hello)
		s.post(t, fmt.Sprintf(`{"t":"sub","doc":%q,"since":1}`, doc))
		wantMsg(t, s.next(t), protocol.TDelta, 2)
		wantMsg(t, s.next(t), protocol.TDelta, 3)
		wantMsg(t, s.next(t), protocol.TSynced, 3)
		s.post(t, fmt.Sprintf(`{"t":"op","doc":%q,"op":1,"ops":[{"op":"set","path":"title","value":"one"}]}`, doc))
		dup := s.next(t)
		if dup.T != protocol.TAck || !dup.Dup || dup.V != 1 {
			t.Fatalf("retried op: %+v", dup)
		}
	})
	t.Run("MalformedMessageEndsTheSession", func(t *testing.T) {
		s := openSSE(t, r.URL(), hello)
		wantErr(t, call(t, "POST", r.URL()+"/v1/events/"+s.session, "application/json", []byte(`[{"doc":"x"}]`)), 400, "bad_request")
		if code, reason := s.closed(t); code != protocol.CloseProtocolError {
			t.Fatalf("close %d %q", code, reason)
		}
		wantErr(t, call(t, "POST", r.URL()+"/v1/events/"+s.session, "application/json", msgs(`{"t":"ping"}`)), 404, "not_found")
	})
	t.Run("Errors", func(t *testing.T) {
		ev := r.URL() + "/v1/events"
		wantErr(t, call(t, "GET", ev, "", nil), 400, "bad_request")
		wantErr(t, call(t, "GET", ev+"?hello="+url.QueryEscape(`{"t":"sub"}`), "", nil), 400, "bad_request")
		wantErr(t, call(t, "GET", ev+"?hello=%7B", "", nil), 400, "bad_request")
		wantErr(t, call(t, "GET", ev+"?hello="+strings.Repeat("a", 9000), "", nil), 413, "too_large")
		wantErr(t, call(t, "POST", ev, "", nil), 405, "method_not_allowed")
		wantErr(t, call(t, "GET", ev+"?hello="+url.QueryEscape(hello), "", nil, "Origin", "https://evil.example"), 403, "forbidden")
		unknown := ev + "/" + uuid.NewString()
		wantErr(t, call(t, "POST", unknown, "application/json", msgs()), 404, "not_found")
		s := openSSE(t, r.URL(), hello)
		post := ev + "/" + s.session
		wantErr(t, call(t, "POST", post, "text/plain", msgs()), 415, "unsupported_media")
		wantErr(t, call(t, "POST", post, "application/json", []byte(`{"t":"ping"}`)), 400, "bad_request")
		wantErr(t, call(t, "POST", post, "application/json", bytes.Repeat([]byte(" "), 2<<20)), 413, "too_large")
		wantErr(t, call(t, "GET", post, "", nil), 405, "method_not_allowed")
		// Same-origin browsers and allowed origins get CORS headers.
		res := call(t, "OPTIONS", post, "", nil, "Origin", r.URL())
		if res.status != http.StatusNoContent {
			t.Fatalf("preflight: %d %s", res.status, res.body)
		}
	})
	t.Run("ShutdownEndsStreamsAtOnce", func(t *testing.T) {
		// An open stream is an active HTTP request: shutdown must end it
		// with "shutting down" (clients resume elsewhere) instead of
		// waiting for it until the deadline.
		s := openSSE(t, r.URL(), hello)
		p := openPoll(t, r.URL(), hello)
		polled := make(chan *struct{ Code int }, 1)
		go func() {
			res, err := http.Get(fmt.Sprintf("%s/v1/poll/%s?after=%d", p.base, p.session, p.seq))
			if err != nil {
				polled <- nil
				return
			}
			defer res.Body.Close()
			var b pollBody
			_ = json.NewDecoder(res.Body).Decode(&b)
			polled <- b.Close
		}()
		time.Sleep(100 * time.Millisecond) // for the poll to reach the server and wait: nothing outside it shows that
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		start := time.Now()
		if err := r.Svc.Shutdown(ctx); err != nil {
			t.Fatal(err)
		}
		r.Svc = nil
		if d := time.Since(start); d > 3*time.Second {
			t.Fatalf("the app's shutdown took %v", d)
		}
		if code, _ := s.closed(t); code != protocol.CloseShuttingDown {
			t.Fatalf("stream closed with %d", code)
		}
		if c := <-polled; c == nil || c.Code != protocol.CloseShuttingDown {
			t.Fatalf("waiting poll got %+v", c)
		}
	})
}

// poller drives a long-poll session; its requests carry token, when set.
type poller struct {
	base, session string
	token         string
	welcome       protocol.Message
	seq           uint64
	buf           []protocol.Message
	closed        *struct{ Code int }
}

type pollBody struct {
	Session  string            `json:"session"`
	Seq      uint64            `json:"seq"`
	Messages []json.RawMessage `json:"messages"`
	Close    *struct{ Code int }
}

func (p *poller) take(t *testing.T, r httpResult, status int) {
	t.Helper()
	if r.status != status {
		t.Fatalf("poll: %d %s", r.status, r.body)
	}
	var b pollBody
	if err := json.Unmarshal(r.body, &b); err != nil {
		t.Fatal(err)
	}
	if b.Session != "" {
		p.session = b.Session
	}
	p.seq = b.Seq
	p.closed = b.Close
	for _, raw := range b.Messages {
		m, err := protocol.Decode(raw)
		if err != nil {
			t.Fatal(err)
		}
		p.buf = append(p.buf, m)
	}
}

func openPoll(t *testing.T, base, hello string) *poller {
	t.Helper()
	return openPollAs(t, base, hello, "")
}

// openPollAs opens a long-poll session whose later requests carry token.
func openPollAs(t *testing.T, base, hello, token string) *poller {
	t.Helper()
	p := &poller{base: base, token: token}
	p.take(t, call(t, "POST", base+"/v1/poll", "application/json", []byte(hello)), http.StatusCreated)
	if !uuidRE.MatchString(p.session) {
		t.Fatalf("session id %q", p.session)
	}
	if p.welcome = p.next(t); p.welcome.T != protocol.TWelcome || p.welcome.Session != p.session {
		t.Fatalf("welcome: %+v", p.welcome)
	}
	return p
}

func (p *poller) poll(t *testing.T) {
	t.Helper()
	p.take(t, call(t, "GET", fmt.Sprintf("%s/v1/poll/%s?after=%d", p.base, p.session, p.seq), "", nil, bearer(p.token)...), http.StatusOK)
}

func (p *poller) next(t *testing.T) protocol.Message {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for len(p.buf) > 0 {
			m := p.buf[0]
			p.buf = p.buf[1:]
			if m.T == protocol.TPing {
				p.post(t, fmt.Sprintf(`{"t":"pong","ts":%d}`, m.TS))
				continue
			}
			return m
		}
		if p.closed != nil {
			t.Fatalf("session closed: %d", p.closed.Code)
		}
		p.poll(t)
	}
	t.Fatal("no message within 10s")
	return protocol.Message{}
}

func (p *poller) post(t *testing.T, ms ...string) {
	t.Helper()
	if r := call(t, "POST", p.base+"/v1/poll/"+p.session, "application/json", msgs(ms...), bearer(p.token)...); r.status != http.StatusNoContent {
		t.Fatalf("post: %d %s", r.status, r.body)
	}
}

func TestLongPoll(t *testing.T) {
	t.Parallel()
	r, doc, hello := startTransport(t, "lp")

	t.Run("SubscribeOpAckDelta", func(t *testing.T) {
		p := openPoll(t, r.URL(), hello)
		p.post(t, fmt.Sprintf(`{"t":"sub","doc":%q}`, doc), fmt.Sprintf(`{"t":"op","doc":%q,"op":1,"ops":[{"op":"inc","path":"responses","value":1}]}`, doc))
		wantMsg(t, p.next(t), protocol.TSynced, 0)
		wantMsg(t, p.next(t), protocol.TAck, 1)
		patch(t, r.URL(), doc, "rest-y", 1, "title", "x")
		wantMsg(t, p.next(t), protocol.TDelta, 2)
		// A poll whose response was lost is repeated with the same "after".
		patch(t, r.URL(), doc, "rest-y", 2, "title", "y")
		before := p.seq
		p.poll(t)
		p.buf, p.seq = nil, before
		wantMsg(t, p.next(t), protocol.TDelta, 3)
	})
	t.Run("ResumeWithSinceAndDup", func(t *testing.T) {
		patch(t, r.URL(), doc, "rest-y", 3, "title", "z")
		p := openPoll(t, r.URL(), hello)
		p.post(t, fmt.Sprintf(`{"t":"sub","doc":%q,"since":2}`, doc), fmt.Sprintf(`{"t":"op","doc":%q,"op":1,"ops":[{"op":"inc","path":"responses","value":1}]}`, doc))
		wantMsg(t, p.next(t), protocol.TDelta, 3)
		wantMsg(t, p.next(t), protocol.TDelta, 4)
		wantMsg(t, p.next(t), protocol.TSynced, 4)
		if dup := p.next(t); dup.T != protocol.TAck || !dup.Dup || dup.V != 1 {
			t.Fatalf("retried op: %+v", dup)
		}
	})
	t.Run("SilentClientTimesOut", func(t *testing.T) {
		// No pongs: the session ends after 2.5 heartbeats (1 s on this
		// replica of its own) and the next poll reports the close.
		r := servicetest.Start(t, servicetest.Options{Config: func(c *config.Config) { c.Heartbeat = 400 * time.Millisecond }})
		p := openPoll(t, r.URL(), hello)
		deadline := time.Now().Add(15 * time.Second)
		for p.closed == nil && time.Now().Before(deadline) {
			p.buf = nil
			p.poll(t)
		}
		if p.closed == nil || p.closed.Code != protocol.CloseHeartbeatTimeout {
			t.Fatalf("close: %+v", p.closed)
		}
		// A repeated poll gets the close again (its response may have been
		// lost); soon after, the session is gone.
		u := fmt.Sprintf("%s/v1/poll/%s?after=%d", p.base, p.session, p.seq)
		testutil.Eventually(t, time.Until(deadline), "the closed session gone", func() bool {
			res := call(t, "GET", u, "", nil)
			if res.status != 404 && (res.status != 200 || !strings.Contains(string(res.body), `"close":{"code":4001`)) {
				t.Fatalf("after the close: %d %s", res.status, res.body)
			}
			return res.status == 404
		})
	})
	t.Run("Errors", func(t *testing.T) {
		wantErr(t, call(t, "GET", r.URL()+"/v1/poll", "", nil), 405, "method_not_allowed")
		wantErr(t, call(t, "POST", r.URL()+"/v1/poll", "application/json", []byte(`{"t":"sub"}`)), 400, "bad_request")
		wantErr(t, call(t, "POST", r.URL()+"/v1/poll", "text/plain", []byte(hello)), 415, "unsupported_media")
		wantErr(t, call(t, "GET", r.URL()+"/v1/poll/"+uuid.NewString()+"?after=0", "", nil), 404, "not_found")
		p := openPoll(t, r.URL(), hello)
		u := r.URL() + "/v1/poll/" + p.session
		wantErr(t, call(t, "GET", u+"?after=x", "", nil), 400, "bad_request")
		wantErr(t, call(t, "GET", u+"?after=99", "", nil), 400, "bad_request")
		wantErr(t, call(t, "DELETE", u, "", nil), 405, "method_not_allowed")
	})
}

func TestWebSocketBinary(t *testing.T) {
	t.Parallel()
	r := servicetest.Start(t, servicetest.Options{})
	doc := "forms/bin-" + uuid.NewString()[:8]
	dial := func(t *testing.T, protos ...string) *websocket.Conn {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, _, err := websocket.Dial(ctx, r.WSURL(), &websocket.DialOptions{Subprotocols: protos})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.CloseNow() })
		return c
	}
	send := func(t *testing.T, c *websocket.Conn, m protocol.Message) {
		t.Helper()
		b, err := protocol.EncodeFrames(m)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Write(context.Background(), websocket.MessageBinary, b); err != nil {
			t.Fatal(err)
		}
	}
	recv := func(t *testing.T, c *websocket.Conn) protocol.Message {
		t.Helper()
		for {
			typ, b, err := readFrame(c)
			if err != nil {
				t.Fatal(err)
			}
			if typ != websocket.MessageBinary {
				t.Fatalf("a %v frame on the binary subprotocol", typ)
			}
			ms, err := protocol.DecodeFrames(b, 0)
			if err != nil {
				t.Fatal(err)
			}
			if ms[0].T != protocol.TPing {
				return ms[0]
			}
		}
	}
	closeOf := func(t *testing.T, c *websocket.Conn) (websocket.StatusCode, string) {
		t.Helper()
		for {
			_, _, err := readFrame(c)
			if err != nil {
				var ce websocket.CloseError
				if !errors.As(err, &ce) {
					t.Fatalf("read: %v", err)
				}
				return ce.Code, ce.Reason
			}
		}
	}

	t.Run("NegotiatedAndSyncing", func(t *testing.T) {
		c := dial(t, protocol.SubprotocolBinary, protocol.SubprotocolJSON)
		if c.Subprotocol() != protocol.SubprotocolBinary {
			t.Fatalf("subprotocol %q", c.Subprotocol())
		}
		send(t, c, protocol.Message{T: protocol.THello, Client: "bin-1", Roles: []string{"editor"}, Proto: 1})
		if w := recv(t, c); w.T != protocol.TWelcome || w.Client != "bin-1" {
			t.Fatalf("welcome: %+v", w)
		}
		send(t, c, protocol.Message{T: protocol.TSub, Doc: doc})
		wantMsg(t, recv(t, c), protocol.TSynced, 0)
		long := strings.Repeat("long text ", 80) // several frames each way
		v, _ := json.Marshal(long)
		send(t, c, protocol.Message{T: protocol.TOp, Doc: doc, Op: 1, Ops: []merge.FieldOp{{Op: merge.KindSet, Path: "notes", Value: v}}})
		wantMsg(t, recv(t, c), protocol.TAck, 1)
		patch(t, r.URL(), doc, "rest-z", 1, "title", "from rest")
		d := recv(t, c)
		wantMsg(t, d, protocol.TDelta, 2)
		if d.PV != 1 || d.By != "rest-z" || string(d.Ops[0].Value) != `"from rest"` {
			t.Fatalf("delta: %+v", d)
		}
	})
	t.Run("JSONStillTheDefault", func(t *testing.T) {
		c := dial(t, protocol.SubprotocolJSON)
		if c.Subprotocol() != protocol.SubprotocolJSON {
			t.Fatalf("subprotocol %q", c.Subprotocol())
		}
	})
	t.Run("BadCRCIsAProtocolError", func(t *testing.T) {
		c := dial(t, protocol.SubprotocolBinary)
		b, _ := protocol.EncodeFrames(protocol.Message{T: protocol.THello, Client: "bin-2"})
		b[len(b)-1] ^= 0xff
		if err := c.Write(context.Background(), websocket.MessageBinary, b); err != nil {
			t.Fatal(err)
		}
		if code, reason := closeOf(t, c); code != protocol.CloseProtocolError || reason != "binary frame: bad_crc" {
			t.Fatalf("close %d %q", code, reason)
		}
	})
	t.Run("TruncatedFrameIsAProtocolError", func(t *testing.T) {
		c := dial(t, protocol.SubprotocolBinary)
		b, _ := protocol.EncodeFrames(protocol.Message{T: protocol.THello, Client: "bin-3"})
		if err := c.Write(context.Background(), websocket.MessageBinary, b[:len(b)-2]); err != nil {
			t.Fatal(err)
		}
		if code, reason := closeOf(t, c); code != protocol.CloseProtocolError || reason != "binary frame: truncated" {
			t.Fatalf("close %d %q", code, reason)
		}
	})
	t.Run("TextOnTheBinarySubprotocol", func(t *testing.T) {
		c := dial(t, protocol.SubprotocolBinary)
		if err := c.Write(context.Background(), websocket.MessageText, []byte(`{"t":"hello"}`)); err != nil {
			t.Fatal(err)
		}
		if code, _ := closeOf(t, c); code != protocol.CloseUnsupported {
			t.Fatalf("close %d", code)
		}
	})
}
