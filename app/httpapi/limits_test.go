package httpapi_test

// Connection limits against the service in process: a request body that trickles in
// is cut off at its deadline on every route that reads one, an upgraded
// WebSocket that does not say hello is closed, long-lived streams outlive
// both deadlines, and sync sessions per client address are capped on every
// transport.

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/google/uuid"

	"github.com/open-autoglm/autoglm/app/config"
	"github.com/open-autoglm/autoglm/app/internal/servicetest"
	"github.com/open-autoglm/autoglm/app/internal/testutil"
	"github.com/open-autoglm/autoglm/app/protocol"
)

const (
	bodyTimeout  = time.Second
	helloTimeout = 500 * time.Millisecond
)

func startLimited(t *testing.T, set func(*config.Config)) *servicetest.Replica {
	return servicetest.Start(t, servicetest.Options{Config: func(c *config.Config) {
		c.BodyTimeout, c.HelloTimeout = bodyTimeout, helloTimeout
		if set != nil {
			set(c)
		}
	}})
}

func helloFor(client string) string {
	return fmt.Sprintf(`{"t":"hello","client":%q,"roles":["editor"],"proto":1}`, client)
}

// slowBody sends method path declaring a 100 KB body and trickles it one
// byte per 200 ms. It returns the answer's status and code, when it came
// (after the headers were sent), and whether the server then closed the
// connection. It gives up 3 s after the body deadline.
func slowBody(t *testing.T, base, method, path string) (status int, code string, after time.Duration, closed bool) {
	t.Helper()
	u, _ := url.Parse(base)
	conn, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := fmt.Fprintf(conn, "%s %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n", method, path, u.Host); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				if _, err := conn.Write([]byte(" ")); err != nil {
					return
				}
			}
		}
	}()
	_ = conn.SetReadDeadline(start.Add(bodyTimeout + 3*time.Second))
	br := bufio.NewReader(conn)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("%s %s: no answer %v after the headers: %v", method, path, time.Since(start).Round(time.Millisecond), err)
	}
	after = time.Since(start)
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	var e struct {
		Error struct{ Code string } `json:"error"`
	}
	_ = json.Unmarshal(b, &e)
	_, err = br.ReadByte()
	var ne net.Error
	closed = err != nil && !(errors.As(err, &ne) && ne.Timeout())
	return res.StatusCode, e.Error.Code, after, closed
}

func TestSlowBodyIsCutOff(t *testing.T) {
	t.Parallel()
	r := startLimited(t, nil)
	doc := "/v1/docs/forms/slow-" + uuid.NewString()[:8]
	// The sessions are opened by the case that posts to them: a session
	// nobody answers ends after 2.5 heartbeats, however long the case
	// waited for its turn.
	cases := []struct {
		name, method string
		path         func(t *testing.T) string
	}{
		{"RESTPut", "PUT", func(*testing.T) string { return doc }},
		{"RESTPatch", "PATCH", func(*testing.T) string { return doc }},
		{"SSEPost", "POST", func(t *testing.T) string {
			return "/v1/events/" + openSSE(t, r.URL(), helloFor("slow-sse")).session
		}},
		{"LongPollOpen", "POST", func(*testing.T) string { return "/v1/poll" }},
		{"LongPollPost", "POST", func(t *testing.T) string {
			return "/v1/poll/" + openPoll(t, r.URL(), helloFor("slow-poll")).session
		}},
	}
	t.Run("Routes", func(t *testing.T) {
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				t.Parallel()
				status, code, after, closed := slowBody(t, r.URL(), c.method, c.path(t))
				if status != http.StatusRequestTimeout || code != "request_timeout" {
					t.Fatalf("got %d %q, want 408 request_timeout", status, code)
				}
				if after < bodyTimeout-100*time.Millisecond || after > bodyTimeout+time.Second {
					t.Fatalf("answered %v after the headers, want about %v", after, bodyTimeout)
				}
				if !closed {
					t.Fatal("the connection stayed open after the answer")
				}
			})
		}
	})
	t.Run("NothingWritten", func(t *testing.T) {
		res := call(t, "GET", r.URL()+doc, "", nil)
		if res.status != http.StatusNotFound {
			t.Fatalf("GET after the cut-off writes: %d %s", res.status, res.body)
		}
	})
}

// readFrame reads c's next frame, waiting at most ten seconds for it.
func readFrame(c *websocket.Conn) (websocket.MessageType, []byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return c.Read(ctx)
}

// wsRead reads the next message of c that is not a ping, answering pings.
func wsRead(t *testing.T, c *websocket.Conn) (protocol.Message, error) {
	t.Helper()
	for {
		_, b, err := readFrame(c)
		if err != nil {
			return protocol.Message{}, err
		}
		m, err := protocol.Decode(b)
		if err != nil {
			t.Fatal(err)
		}
		if m.T != protocol.TPing {
			return m, nil
		}
		pong, _ := protocol.Encode(protocol.Message{T: protocol.TPong, TS: m.TS})
		if err := c.Write(context.Background(), websocket.MessageText, pong); err != nil {
			return protocol.Message{}, err
		}
	}
}

func dialWS(t *testing.T, u string, hdr http.Header) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, res, err := websocket.Dial(ctx, u, &websocket.DialOptions{Subprotocols: []string{protocol.SubprotocolJSON}, HTTPHeader: hdr})
	if err == nil {
		t.Cleanup(func() { c.CloseNow() })
	}
	return c, res, err
}

func wsSend(t *testing.T, c *websocket.Conn, m string) {
	t.Helper()
	if err := c.Write(context.Background(), websocket.MessageText, []byte(m)); err != nil {
		t.Fatal(err)
	}
}

func closeCode(err error) websocket.StatusCode {
	var ce websocket.CloseError
	if errors.As(err, &ce) {
		return ce.Code
	}
	return -1
}

func TestHelloDeadline(t *testing.T) {
	t.Parallel()
	r := startLimited(t, nil)
	within := func(t *testing.T, start time.Time) {
		t.Helper()
		if d := time.Since(start); d < helloTimeout || d > helloTimeout+time.Second {
			t.Fatalf("closed %v after the upgrade, want %v (+ at most 1 s)", d, helloTimeout)
		}
	}
	t.Run("Silent", func(t *testing.T) {
		t.Parallel() // each on its own connection
		start := time.Now()
		c, _, err := dialWS(t, r.WSURL(), nil)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for err == nil {
			_, _, err = c.Read(ctx) // nothing is answered, not even pings
		}
		if closeCode(err) != protocol.CloseHelloTimeout {
			t.Fatalf("got %v, want close %d", err, protocol.CloseHelloTimeout)
		}
		within(t, start)
	})
	t.Run("FrameNeverFinished", func(t *testing.T) {
		t.Parallel() // each on its own connection
		// The upgrade, then the start of a 256-byte frame that never ends.
		u, _ := url.Parse(r.URL())
		conn, err := net.Dial("tcp", u.Host)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		start := time.Now()
		fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
			"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: %s\r\n\r\n",
			protocol.PathSync, u.Host, protocol.SubprotocolJSON)
		_ = conn.SetReadDeadline(start.Add(5 * time.Second))
		br := bufio.NewReader(conn)
		res, err := http.ReadResponse(br, nil)
		if err != nil || res.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("upgrade: %v %v", res, err)
		}
		if _, err := conn.Write([]byte{0x81, 0x80 | 126, 0x01, 0x00, 1, 2, 3, 4, '{'}); err != nil {
			t.Fatal(err)
		}
		for {
			hdr := make([]byte, 2)
			if _, err := io.ReadFull(br, hdr); err != nil {
				t.Fatalf("no close frame: %v", err)
			}
			n := int(hdr[1] & 0x7f)
			if n == 126 {
				var ext [2]byte
				if _, err := io.ReadFull(br, ext[:]); err != nil {
					t.Fatal(err)
				}
				n = int(binary.BigEndian.Uint16(ext[:]))
			}
			payload := make([]byte, n)
			if _, err := io.ReadFull(br, payload); err != nil {
				t.Fatal(err)
			}
			if hdr[0]&0x0f != 0x8 || n < 2 { // the session's pings
				continue
			}
			if code := binary.BigEndian.Uint16(payload); code != protocol.CloseHelloTimeout {
				t.Fatalf("close %d %q, want %d", code, payload[2:], protocol.CloseHelloTimeout)
			}
			within(t, start)
			return
		}
	})
	t.Run("HelloInTimeOutlivesBothDeadlines", func(t *testing.T) {
		t.Parallel() // each on its own connection
		doc := "forms/hello-" + uuid.NewString()[:8]
		c, _, err := dialWS(t, r.WSURL(), nil)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		wsSend(t, c, helloFor("in-time"))
		if m, err := wsRead(t, c); err != nil || m.T != protocol.TWelcome {
			t.Fatalf("welcome: %+v %v", m, err)
		}
		wsSend(t, c, fmt.Sprintf(`{"t":"sub","doc":%q}`, doc))
		if m, err := wsRead(t, c); err != nil || m.T != protocol.TSynced {
			t.Fatalf("synced: %+v %v", m, err)
		}
		// Round trips until both deadlines are well past; the session
		// still takes ops.
		for time.Since(start) < 2*bodyTimeout {
			wsSend(t, c, `{"t":"ping","ts":1}`)
			if m, err := wsRead(t, c); err != nil || m.T != protocol.TPong {
				t.Fatalf("pong: %+v %v", m, err)
			}
		}
		wsSend(t, c, fmt.Sprintf(`{"t":"op","doc":%q,"op":1,"ops":[{"op":"set","path":"a","value":1}]}`, doc))
		if m, err := wsRead(t, c); err != nil || m.T != protocol.TAck {
			t.Fatalf("ack: %+v %v", m, err)
		}
	})
	t.Run("EventStreamOutlivesTheBodyDeadline", func(t *testing.T) {
		t.Parallel() // each on its own connection
		doc := "forms/sse-" + uuid.NewString()[:8]
		s := openSSE(t, r.URL(), helloFor("sse-long"))
		start := time.Now()
		s.post(t, fmt.Sprintf(`{"t":"sub","doc":%q}`, doc))
		wantMsg(t, s.next(t), protocol.TSynced, 0)
		for time.Since(start) < 2*bodyTimeout {
			s.post(t, `{"t":"ping","ts":1}`)
			if m := s.next(t); m.T != protocol.TPong {
				t.Fatalf("pong: %+v", m)
			}
		}
		s.post(t, fmt.Sprintf(`{"t":"op","doc":%q,"op":1,"ops":[{"op":"set","path":"a","value":1}]}`, doc))
		wantMsg(t, s.next(t), protocol.TAck, 1)
	})
}

// errRefused: the server refused to open a session with 429 rate_limited.
var errRefused = errors.New("refused: 429 rate_limited")

// opener opens a sync session of one transport from addr (the trusted
// client-address header; empty: none sent) and returns what ends it.
type opener func(t *testing.T, r *servicetest.Replica, addr string) (end func(), err error)

func addrHeader(addr string) http.Header {
	h := http.Header{}
	if addr != "" {
		h.Set("X-Forwarded-For", "203.0.113.250, "+addr)
	}
	return h
}

func refusal(res *http.Response) error {
	b, _ := io.ReadAll(res.Body)
	var e struct {
		Error struct{ Code string } `json:"error"`
	}
	_ = json.Unmarshal(b, &e)
	if res.StatusCode == http.StatusTooManyRequests && e.Error.Code == "rate_limited" {
		return errRefused
	}
	return fmt.Errorf("%d %s", res.StatusCode, b)
}

var openers = map[string]opener{
	"ws": func(t *testing.T, r *servicetest.Replica, addr string) (func(), error) {
		c, res, err := dialWS(t, r.WSURL(), addrHeader(addr))
		if err != nil {
			if res != nil && res.StatusCode == http.StatusTooManyRequests {
				return nil, errRefused
			}
			return nil, err
		}
		wsSend(t, c, helloFor("cap-ws"))
		if m, err := wsRead(t, c); err != nil || m.T != protocol.TWelcome {
			return nil, fmt.Errorf("welcome: %+v %v", m, err)
		}
		return func() { c.Close(websocket.StatusNormalClosure, "") }, nil
	},
	"sse": func(t *testing.T, r *servicetest.Replica, addr string) (func(), error) {
		ctx, cancel := context.WithCancel(context.Background())
		t.Cleanup(cancel)
		req, _ := http.NewRequestWithContext(ctx, "GET", r.URL()+"/v1/events?hello="+url.QueryEscape(helloFor("cap-sse")), nil)
		req.Header = addrHeader(addr)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, err
		}
		if res.StatusCode != http.StatusOK {
			defer res.Body.Close()
			return nil, refusal(res)
		}
		line, err := bufio.NewReader(res.Body).ReadString('\n')
		if !strings.Contains(line, `"welcome"`) {
			return nil, fmt.Errorf("first event %q %v", line, err)
		}
		return cancel, nil
	},
	// A long-poll session ends once its client stops polling and answering
	// pings (2.5 heartbeats).
	"longpoll": func(t *testing.T, r *servicetest.Replica, addr string) (func(), error) {
		req, _ := http.NewRequest("POST", r.URL()+"/v1/poll", strings.NewReader(helloFor("cap-poll")))
		req.Header = addrHeader(addr)
		req.Header.Set("Content-Type", "application/json")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, err
		}
		defer res.Body.Close()
		if res.StatusCode != http.StatusCreated {
			return nil, refusal(res)
		}
		return func() {}, nil
	},
}

// eventually retries open until it succeeds (a closed session's slot is
// given back as soon as the server has seen it end).
func eventually(t *testing.T, r *servicetest.Replica, open opener, addr string) func() {
	t.Helper()
	var end func()
	testutil.Eventually(t, 10*time.Second, "the ended session's slot given back", func() bool {
		var err error
		end, err = open(t, r, addr)
		if err != nil && !errors.Is(err, errRefused) {
			t.Fatalf("after a session ended: %v", err)
		}
		return err == nil
	})
	return end
}

// TestConnectionCapPerAddress: with a cap of 2, a third sync session from
// one client address is refused 429 rate_limited on every transport and in
// any mix of them, other addresses are unaffected, and an ended session
// gives its slot back.
func TestConnectionCapPerAddress(t *testing.T) {
	t.Parallel()
	// Sessions nobody answers end after 2.5 heartbeats: long enough for each
	// case, short enough for a dropped long-poll client to give its slot back.
	r := startLimited(t, func(c *config.Config) {
		c.MaxConnsPerAddr, c.ClientAddrHeader, c.Heartbeat = 2, "X-Forwarded-For", 2*time.Second
	})
	cases := []struct {
		name  string
		order []string // the third one is refused
	}{
		{"WebSocket", []string{"ws", "ws", "ws"}},
		{"SSE", []string{"sse", "sse", "sse"}},
		{"LongPoll", []string{"longpoll", "longpoll", "longpoll"}},
		{"Mixed", []string{"ws", "sse", "longpoll"}},
		{"MixedOtherOrder", []string{"longpoll", "ws", "sse"}},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel() // each from its own addresses
			addr := fmt.Sprintf("198.51.100.%d", i+1)
			first, err := openers[c.order[0]](t, r, addr)
			if err != nil {
				t.Fatalf("first session: %v", err)
			}
			if _, err := openers[c.order[1]](t, r, addr); err != nil {
				t.Fatalf("second session: %v", err)
			}
			if _, err := openers[c.order[2]](t, r, addr); !errors.Is(err, errRefused) {
				t.Fatalf("third session: got %v, want %v", err, errRefused)
			}
			if _, err := openers[c.order[2]](t, r, fmt.Sprintf("198.51.100.%d", 100+i)); err != nil {
				t.Fatalf("another address: %v", err)
			}
			first()
			eventually(t, r, openers[c.order[2]], addr)
		})
	}
	t.Run("WithoutTheHeaderThePeerAddressCounts", func(t *testing.T) {
		t.Parallel() // the only case without the header
		for range 2 {
			if _, err := openers["ws"](t, r, ""); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := openers["sse"](t, r, ""); !errors.Is(err, errRefused) {
			t.Fatalf("third session from the peer address: got %v, want %v", err, errRefused)
		}
	})
}
