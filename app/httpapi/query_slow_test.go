// The race detector slows each write past the server's write timeout, so
// the server rightly drops this slow reader before its queries overflow.

//go:build !race

package httpapi_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/open-autoglm/autoglm/app/protocol"
)

// pumpWSPaused is pumpWS whose reading starts only when msgs is first
// called, so the server's writes back up meanwhile.
func pumpWSPaused(t *testing.T, base, token string) (send func(protocol.Message), msgs func() <-chan protocol.Message) {
	t.Helper()
	ctx, c, send := dialJSON(t, base)
	read := func() protocol.Message {
		for {
			_, b, err := c.Read(ctx)
			if err != nil {
				return protocol.Message{T: "closed: " + err.Error()}
			}
			m, _ := protocol.Decode(b)
			if m.T != protocol.TPing {
				return m
			}
			send(protocol.Message{T: protocol.TPong, TS: m.TS})
		}
	}
	send(protocol.Message{T: protocol.THello, Client: "slow", Token: token, Proto: protocol.Version})
	if m := read(); m.T != protocol.TWelcome {
		t.Fatalf("hello answered with %+v", m)
	}
	ch := make(chan protocol.Message, 16)
	var once sync.Once
	msgs = func() <-chan protocol.Message {
		once.Do(func() {
			go func() {
				for {
					m := read()
					select {
					case ch <- m:
					case <-ctx.Done():
						return
					}
				}
			}()
		})
		return ch
	}
	return send, msgs
}

// A client that does not read fast enough loses no result: its queries are
// brought up to date as a resume would (then synced again).
func TestLiveQuerySlowReader(t *testing.T) {
	base := startAuthedWith(t, readCollections())
	admin := idToken(t, "root", "admin")
	send, msgs := pumpWSPaused(t, base, admin)
	send(protocol.Message{T: protocol.TSub, Coll: "t-lww", QID: "all", Query: json.RawMessage(`{}`)})
	big := strings.Repeat("x", 60000)
	const n = 600
	for i := range n {
		put(t, base, admin, fmt.Sprintf("t-lww/d%03d", i), fmt.Sprintf(`{"team":"red","i":%d,"pad":%q}`, i, big))
	}
	held := map[string]int64{}
	synced := 0
	for len(held) < n || synced < 2 {
		var m protocol.Message
		select {
		case m = <-msgs():
		case <-time.After(10 * time.Second):
			t.Fatalf("held %d of %d, synced %d times", len(held), n, synced)
		}
		switch m.T {
		case protocol.TSynced:
			synced++
		case protocol.TSnap, protocol.TAdded:
			held[m.Doc] = m.V
		default:
			t.Fatalf("unexpected %+v", m)
		}
	}
}
