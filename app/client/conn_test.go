package client_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/open-autoglm/autoglm/app/client"
	"github.com/open-autoglm/autoglm/app/internal/clienttest"
	"github.com/open-autoglm/autoglm/app/internal/servicetest"
	"github.com/open-autoglm/autoglm/app/protocol"
)

// A Conn speaks the one encoding it offered, gives its subs the next
// handles, and its heads name the document a compact delta gives by the
// handle alone.
func TestConnHeadsNameTheDocument(t *testing.T) {
	r := servicetest.Start(t, servicetest.Options{})
	for _, sub := range []string{protocol.SubprotocolBinary, protocol.SubprotocolJSON} {
		t.Run(sub, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			c, err := client.DialConn(ctx, r.WSURL(), client.ConnOptions{Subprotocols: []string{sub}})
			if err != nil {
				t.Fatal(err)
			}
			defer c.CloseNow()
			if c.Subprotocol() != sub || c.Proto() != protocol.Version || c.Welcome().Client == "" {
				t.Fatalf("subprotocol %q, proto %d, welcome %+v", c.Subprotocol(), c.Proto(), c.Welcome())
			}
			doc := "forms/heads-" + map[string]string{protocol.SubprotocolBinary: "bin", protocol.SubprotocolJSON: "json"}[sub]
			for i, d := range []string{"forms/heads-other", doc} {
				h, err := c.Sub(ctx, protocol.Message{T: protocol.TSub, Doc: d})
				if err != nil || h != uint64(i+1) {
					t.Fatalf("sub %s: handle %d, %v", d, h, err)
				}
			}
			synced := 0
			var hs []client.Head
			for synced < 2 {
				if hs, err = c.ReadHeads(ctx, hs[:0]); err != nil {
					t.Fatal(err)
				}
				for _, h := range hs {
					if h.T == protocol.TSynced {
						synced++
					}
				}
			}
			w := clienttest.Dial(t, ctx, r.WSURL(), client.Options{})
			if _, err := w.Do(ctx, doc, 0, client.Set("title", "x")); err != nil {
				t.Fatal(err)
			}
			for {
				if hs, err = c.ReadHeads(ctx, hs[:0]); err != nil {
					t.Fatal(err)
				}
				for _, h := range hs {
					if h.T != protocol.TDelta {
						continue
					}
					if h.Doc != doc || h.V != 1 || h.H != 2 {
						t.Fatalf("delta head %+v, want %s v1 under handle 2", h, doc)
					}
					return
				}
			}
		})
	}
}

// ServeHeads answers the server's pings itself and hands on everything
// else, starting with what came with the welcome.
func TestConnServeHeadsAnswersPings(t *testing.T) {
	pong := make(chan protocol.Message, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{protocol.SubprotocolBinary}})
		if err != nil {
			return
		}
		defer conn.CloseNow()
		ctx := r.Context()
		if _, _, err := conn.Read(ctx); err != nil { // hello
			return
		}
		send := func(ms ...protocol.Message) {
			var b []byte
			for _, m := range ms {
				f, _ := protocol.EncodeFrames(m)
				b = append(b, f...)
			}
			_ = conn.Write(ctx, websocket.MessageBinary, b)
		}
		send(protocol.Message{T: protocol.TWelcome, Client: "c-1", Proto: protocol.Version},
			protocol.Message{T: protocol.TError, Code: "x", Msg: "early"})
		send(protocol.Message{T: protocol.TPing, TS: 7})
		_, b, err := conn.Read(ctx)
		if err != nil {
			return
		}
		ms, _ := protocol.DecodeFrames(b, len(b)+1)
		pong <- ms[0]
		send(protocol.Message{T: protocol.TDelta, Doc: "forms/a", V: 3, PV: 2})
		_, _, _ = conn.Read(ctx) // until the client goes
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.DialConn(ctx, protocol.SyncURL(srv.URL), client.ConnOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	heads := make(chan client.Head, 8)
	go func() { _ = c.ServeHeads(ctx, func(_ time.Time, h client.Head) { heads <- h }) }()
	want := []client.Head{{T: protocol.TError, Code: "x", Msg: "early"}, {T: protocol.TDelta, Doc: "forms/a", V: 3}}
	for _, w := range want {
		select {
		case h := <-heads:
			if h != w {
				t.Fatalf("head %+v, want %+v", h, w)
			}
		case <-ctx.Done():
			t.Fatalf("no head %+v", w)
		}
	}
	if m := <-pong; m.T != protocol.TPong || m.TS != 7 {
		t.Fatalf("answer to the ping: %+v", m)
	}
}
