package httpapi

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// guardedConn serves one WebSocket whose writes go through wsOut and its
// writeGuard; the client never reads, so writes block once the socket
// buffers are full.
func guardedConn(t *testing.T, ctx context.Context, timeout time.Duration) <-chan error {
	t.Helper()
	done := make(chan error, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		out := newWSOut()
		conn, err := websocket.Accept(hijackResponse{w, out}, r, nil)
		if err != nil {
			done <- err
			return
		}
		g, stop := newWriteGuard(ctx, func() { _ = conn.CloseNow() }, timeout)
		defer stop()
		out.guard = g
		big := []byte(strings.Repeat("x", 1<<20))
		for {
			if err := out.send(opBinary, big); err != nil {
				done <- err
				return
			}
		}
	}))
	t.Cleanup(srv.Close)
	c, _, err := websocket.Dial(context.Background(), "ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.CloseNow() })
	return done
}

func TestWriteGuardEndsAWriteThatOutlastsTheTimeout(t *testing.T) {
	t.Parallel()
	done := guardedConn(t, context.Background(), 200*time.Millisecond)
	writeEnded(t, done, "a write to a peer that never reads was not ended by the write timeout")
}

func TestWriteGuardEndsAWriteUnderWayWhenTheSessionEnds(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	done := guardedConn(t, ctx, time.Hour)
	// Whether the writes have filled the socket buffers by now or not, the
	// session's end must end them.
	cancel()
	writeEnded(t, done, "a blocked write outlived its session")
}

// writeEnded waits up to 10s for the writes to the stalled peer to end with
// an error; the test fails with outlived when they go on.
func writeEnded(t *testing.T, done <-chan error, outlived string) {
	t.Helper()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("write to a stalled peer succeeded")
		}
	case <-time.After(10 * time.Second):
		t.Fatal(outlived)
	}
}
