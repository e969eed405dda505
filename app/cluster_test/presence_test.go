package cluster_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/open-autoglm/autoglm/app/client"
	"github.com/open-autoglm/autoglm/app/internal/cluster"
	"github.com/open-autoglm/autoglm/app/internal/testutil"
	"github.com/open-autoglm/autoglm/app/protocol"
)

// TestPresenceAcrossReplicas: a client on replica A sees the presence a
// client on replica B sets, and sees it vanish within the expiry (three
// heartbeats; 1s each here) after B's replica is killed with SIGKILL, which
// sends nobody a goodbye.
func TestPresenceAcrossReplicas(t *testing.T) {
	c := cluster.Start(t, cluster.Options{Profile: "redis", Replicas: 2})
	a, b := c.Nodes[0], c.Nodes[1]
	doc := collection() + "/pr"
	create(t, a.URL(), []string{doc})

	type seen struct {
		data map[string]any
		gone time.Time
	}
	var mu sync.Mutex
	others := map[string]*seen{}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	watcher, err := client.Dial(ctx, a.WSURL(), client.Options{ClientID: "watcher", OnMessage: func(m protocol.Message, _ int) {
		if m.T != protocol.TPresence || m.Doc != doc {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if m.Del {
			if s := others[m.Client]; s != nil && s.gone.IsZero() {
				s.gone = time.Now()
			}
			return
		}
		others[m.Client] = &seen{data: m.Data}
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer watcher.Close()
	if _, err := watcher.Subscribe(ctx, doc, 0); err != nil {
		t.Fatal(err)
	}

	// B's client speaks the protocol directly: hello, sub, presence.
	conn, _, err := websocket.Dial(ctx, b.WSURL(), &websocket.DialOptions{Subprotocols: []string{protocol.SubprotocolJSON}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseNow()
	send := func(m protocol.Message) {
		bs, _ := protocol.Encode(m)
		if err := conn.Write(ctx, websocket.MessageText, bs); err != nil {
			t.Fatal(err)
		}
	}
	go func() { // answer pings, drop the rest
		for {
			_, bs, err := conn.Read(ctx)
			if err != nil {
				return
			}
			if m, err := protocol.Decode(bs); err == nil && m.T == protocol.TPing {
				send(protocol.Message{T: protocol.TPong, TS: m.TS})
			}
		}
	}()
	send(protocol.Message{T: protocol.THello, Client: "editor-b", Proto: protocol.Version})
	send(protocol.Message{T: protocol.TSub, Doc: doc})
	send(protocol.Message{T: protocol.TPresence, Doc: doc, Data: map[string]any{"field": "title"}})

	arrived := testutil.Eventually(t, 10*time.Second, "presence from replica B reaches replica A", func() bool {
		mu.Lock()
		defer mu.Unlock()
		s := others["editor-b"]
		return s != nil && s.data["field"] == "title"
	})
	// Heartbeats keep refreshing it: still there after more than the
	// expiry.
	time.Sleep(3500 * time.Millisecond) // time passes on purpose: longer than the presence expiry
	mu.Lock()
	if s := others["editor-b"]; s == nil || !s.gone.IsZero() {
		t.Fatal("presence of a live client expired")
	}
	mu.Unlock()

	killed := time.Now()
	b.KillApp()
	testutil.Eventually(t, 10*time.Second, "presence of the killed replica's client vanishes", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return !others["editor-b"].gone.IsZero()
	})
	mu.Lock()
	vanished := others["editor-b"].gone.Sub(killed)
	mu.Unlock()
	if vanished > 5*time.Second {
		t.Fatalf("presence vanished %v after the kill; want within the 3s expiry plus a sweep", vanished)
	}
	t.Logf("presence crossed replicas in %v; vanished %v after its replica was killed (expiry 3 heartbeats = 3s, swept every 1s)",
		arrived.Round(time.Millisecond), vanished.Round(time.Millisecond))
}
