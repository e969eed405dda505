package client_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/open-autoglm/autoglm/app/client"
	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/internal/daprtest"
	"github.com/open-autoglm/autoglm/app/protocol"
)

// TestDefaultsBinaryAndReconnect: with default options the client speaks
// the binary encoding and comes back by itself after the replica has been
// down, resuming the document.
func TestDefaultsBinaryAndReconnect(t *testing.T) {
	r := daprtest.Start(t, daprtest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, r.WSURL(), client.Options{MaxBackoff: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := c.Subprotocol(); got != protocol.SubprotocolBinary {
		t.Fatalf("subprotocol %q, want the binary one", got)
	}
	doc := "forms/go-" + uuid.NewString()[:8]
	d, err := c.Subscribe(ctx, doc, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Do(ctx, doc, 0, client.Set("a", 1)); err != nil {
		t.Fatal(err)
	}
	r.Stop()
	for c.Connected() {
		select {
		case <-ctx.Done():
			t.Fatal("still connected to a stopped replica")
		case <-time.After(20 * time.Millisecond):
		}
	}
	r.Restart()
	for !c.Connected() {
		select {
		case <-ctx.Done():
			t.Fatal("no reconnect after the replica came back")
		case <-time.After(20 * time.Millisecond):
		}
	}
	// The store may answer "unavailable" (retryable) for a moment while
	// the sidecar reconnects to it.
	for {
		_, err := c.Do(ctx, doc, 1, client.Inc("n", 2))
		if err == nil {
			break
		}
		var ce *core.Error
		if !errors.As(err, &ce) || ce.Code != core.CodeUnavailable {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond) // the backoff of a client that retries an unavailable store
	}
	if err := d.WaitVersion(ctx, 2); err != nil {
		t.Fatal(err)
	}
	if got := d.Data(); got["a"] != 1.0 || got["n"] != 2.0 {
		t.Fatalf("copy after reconnect: %v", got)
	}
	if got := c.Subprotocol(); got != protocol.SubprotocolBinary {
		t.Fatalf("subprotocol after reconnect %q", got)
	}
}
