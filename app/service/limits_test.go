package service_test

import (
	"bufio"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/open-autoglm/autoglm/app/config"
	"github.com/open-autoglm/autoglm/app/internal/servicetest"
	"github.com/open-autoglm/autoglm/app/internal/testutil"
	"github.com/open-autoglm/autoglm/app/protocol"
)

// TestConnectionCapPerIdentity: with authentication on and a cap of 2
// sessions per identity, a third session of the same token subject is closed
// with 4004 rate_limited right after its hello on every transport, wherever
// it connects from; other identities are unaffected, and an ended session
// gives its slot back.
func TestConnectionCapPerIdentity(t *testing.T) {
	r := servicetest.Start(t, servicetest.Options{Secret: testSecret, Config: func(c *config.Config) {
		c.MaxConnsPerIdentity, c.MaxConnsPerAddr = 2, 0
	}})
	ann := token(t, "ann", time.Hour, "user")
	hello := func(tok string) protocol.Message {
		return protocol.Message{T: protocol.THello, Client: "c-" + uuid.NewString()[:8], Token: tok, Proto: protocol.Version}
	}
	openWS := func(t *testing.T, tok string) *rawWS {
		w := dialRaw(t, r.WSURL())
		w.send(hello(tok))
		return w
	}
	first := openWS(t, ann)
	first.expect(protocol.TWelcome)
	openWS(t, ann).expect(protocol.TWelcome)

	closedWith := func(t *testing.T, code int, reason string) {
		t.Helper()
		if code != protocol.CloseRateLimited || !strings.Contains(reason, "connections") {
			t.Fatalf("closed %d %q, want %d (too many connections)", code, reason, protocol.CloseRateLimited)
		}
	}
	t.Run("WebSocket", func(t *testing.T) {
		openWS(t, ann).expectClose(protocol.CloseRateLimited, 5*time.Second)
	})
	t.Run("SSE", func(t *testing.T) {
		b, _ := protocol.Encode(hello(ann))
		res, err := http.Get(r.URL() + "/v1/events?hello=" + url.QueryEscape(string(b)))
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		// The stream's only event is the close.
		sc := bufio.NewScanner(res.Body)
		var event, data string
		for sc.Scan() && sc.Text() != "" {
			if v, ok := strings.CutPrefix(sc.Text(), "event: "); ok {
				event = v
			}
			if v, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				data = v
			}
		}
		var c struct {
			Code   int
			Reason string
		}
		if event != "close" || json.Unmarshal([]byte(data), &c) != nil {
			t.Fatalf("first event %q %q, want the close", event, data)
		}
		closedWith(t, c.Code, c.Reason)
	})
	t.Run("LongPoll", func(t *testing.T) {
		b, _ := protocol.Encode(hello(ann))
		res, err := http.Post(r.URL()+"/v1/poll", "application/json", strings.NewReader(string(b)))
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var p struct {
			Messages []json.RawMessage
			Close    *struct {
				Code   int
				Reason string
			}
		}
		if err := json.NewDecoder(res.Body).Decode(&p); err != nil || p.Close == nil || len(p.Messages) != 0 {
			t.Fatalf("open: %d %+v %v, want no welcome and a close", res.StatusCode, p, err)
		}
		closedWith(t, p.Close.Code, p.Close.Reason)
	})
	t.Run("OtherIdentities", func(t *testing.T) {
		openWS(t, token(t, "bob", time.Hour, "user")).expect(protocol.TWelcome)
	})
	t.Run("SlotGivenBack", func(t *testing.T) {
		first.conn.CloseNow()
		testutil.Eventually(t, 10*time.Second, "the ended session's slot given back", func() bool {
			m, code := openWS(t, ann).next(5 * time.Second)
			if m.T != protocol.TWelcome && code != protocol.CloseRateLimited {
				t.Fatalf("after a session ended: %+v / close %d", m, code)
			}
			return m.T == protocol.TWelcome
		})
	})
}
