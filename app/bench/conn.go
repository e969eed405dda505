package bench

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/open-autoglm/autoglm/app/client"
	"github.com/open-autoglm/autoglm/app/protocol"
)

// Counter adds up the bytes read and written on every connection dialled
// through it: what crossed the socket, WebSocket and HTTP framing included
// (TCP/IP headers are below the socket and not counted).
type Counter struct {
	read, written atomic.Int64
}

// Bytes is a reading of a Counter.
type Bytes struct {
	Read    int64 `json:"read"`
	Written int64 `json:"written"`
}

// Sub returns b - o.
func (b Bytes) Sub(o Bytes) Bytes {
	return Bytes{Read: b.Read - o.Read, Written: b.Written - o.Written}
}

// Load reads the counter.
func (c *Counter) Load() Bytes { return Bytes{Read: c.read.Load(), Written: c.written.Load()} }

// Wrap returns conn counting into c.
func (c *Counter) Wrap(conn net.Conn) net.Conn { return &countingConn{Conn: conn, c: c} }

type countingConn struct {
	net.Conn
	c *Counter
}

func (cc *countingConn) Read(p []byte) (int, error) {
	n, err := cc.Conn.Read(p)
	cc.c.read.Add(int64(n))
	return n, err
}

func (cc *countingConn) Write(p []byte) (int, error) {
	n, err := cc.Conn.Write(p)
	cc.c.written.Add(int64(n))
	return n, err
}

// HTTPClient returns a client whose connections count into c. Each
// WebSocket dialled with it (websocket.DialOptions.HTTPClient) is one of
// these connections, hijacked after the upgrade, so its frames count too.
func (c *Counter) HTTPClient(maxConnsPerHost int) *http.Client {
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			conn, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return c.Wrap(conn), nil
		},
		MaxIdleConns:        maxConnsPerHost,
		MaxIdleConnsPerHost: maxConnsPerHost,
		IdleConnTimeout:     time.Minute,
		DisableCompression:  true,
	}}
}

func closeConn(c *client.Conn) { _ = c.Close("bench done") }

// dial connects one sync connection in the encoding asked for (binary or
// JSON, not whichever the server prefers) as client id.
func dial(ctx context.Context, base string, hc *http.Client, bin bool, id string) (*client.Conn, error) {
	proto := protocol.SubprotocolJSON
	if bin {
		proto = protocol.SubprotocolBinary
	}
	c, err := client.DialConn(ctx, protocol.SyncURL(base), client.ConnOptions{
		Subprotocols: []string{proto}, HTTPClient: hc, Hello: protocol.Message{Client: id},
	})
	if err != nil {
		return nil, err
	}
	if c.Subprotocol() != proto {
		_ = c.CloseNow()
		return nil, fmt.Errorf("server did not accept subprotocol %s", proto)
	}
	return c, nil
}
