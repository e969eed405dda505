// Package clienttest opens Go clients for tests: a failed dial or
// subscription fails the test, and a client is closed when its test ends.
// Session opens a bare WebSocket session for tests that speak the protocol
// themselves.
package clienttest

import (
	"context"
	"testing"

	"github.com/coder/websocket"

	"github.com/open-autoglm/autoglm/app/client"
	"github.com/open-autoglm/autoglm/app/protocol"
)

// Dial connects a client to the sync endpoint url within ctx; it is closed
// when the test ends.
func Dial(t testing.TB, ctx context.Context, url string, opt client.Options) *client.Client {
	t.Helper()
	c, err := client.Dial(ctx, url, opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// Subscribe subscribes c to doc from version since within ctx.
func Subscribe(t testing.TB, ctx context.Context, c *client.Client, doc string, since int64) *client.Doc {
	t.Helper()
	d, err := c.Subscribe(ctx, doc, since)
	if err != nil {
		t.Fatalf("subscribe %s: %v", doc, err)
	}
	return d
}

// Watch dials url, subscribes to doc and waits, within ctx, until the copy
// is at version v or later.
func Watch(t testing.TB, ctx context.Context, url string, opt client.Options, doc string, v int64) *client.Doc {
	t.Helper()
	d := Subscribe(t, ctx, Dial(t, ctx, url, opt), doc, 0)
	if err := d.WaitVersion(ctx, v); err != nil {
		t.Fatalf("%s never reached version %d: %v", doc, v, err)
	}
	return d
}

// Session opens a JSON WebSocket session on the sync endpoint url within
// ctx and says hello as id. It returns the connection (closed when the
// test ends), a function that sends a message and one that reads the next
// message that is not a ping, answering pings; a failure fails the test.
func Session(t testing.TB, ctx context.Context, url, id string) (c *websocket.Conn, send func(protocol.Message), next func() protocol.Message) {
	t.Helper()
	c, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.CloseNow() })
	send = func(m protocol.Message) {
		b, _ := protocol.Encode(m)
		if err := c.Write(ctx, websocket.MessageText, b); err != nil {
			t.Fatal(err)
		}
	}
	next = func() protocol.Message {
		for {
			_, b, err := c.Read(ctx)
			if err != nil {
				t.Fatal(err)
			}
			m, err := protocol.Decode(b)
			if err != nil {
				t.Fatal(err)
			}
			if m.T != protocol.TPing {
				return m
			}
			send(protocol.Message{T: protocol.TPong, TS: m.TS})
		}
	}
	send(protocol.Message{T: protocol.THello, Client: id, Proto: protocol.Version})
	if m := next(); m.T != protocol.TWelcome {
		t.Fatalf("hello: %+v", m)
	}
	return c, send, next
}
