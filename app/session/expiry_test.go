package session_test

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/open-autoglm/autoglm/app/auth"
	"github.com/open-autoglm/autoglm/app/protocol"
	"github.com/open-autoglm/autoglm/app/session"
)

// Once its token has expired a session sends nothing more: a subscription
// that was waiting while the session was busy is not answered with the
// document, whichever the session would have picked first. It closes with
// token_expired.
func TestNothingLeavesAfterTheTokenExpires(t *testing.T) {
	for i := range 20 {
		expired := func(context.Context, string) (auth.Identity, error) {
			return auth.Identity{Subject: "u", Expires: time.Now().Add(-time.Millisecond)}, nil
		}
		r := newRig(t, true, session.Options{ID: fmt.Sprint("s", i), Authenticate: expired})
		r.write(t, 1)
		// The welcome waits at the gate, so the session is busy while the
		// token expires and the subscription queues behind it.
		gate, held := make(chan struct{}), make(chan struct{}, 1)
		r.send.gate.Store(&gate)
		r.send.held.Store(&held)
		r.recv(t, protocol.Message{T: protocol.THello, Client: "c", Proto: 1})
		<-held
		ctx, cancel := context.WithTimeout(r.ctx, 2*time.Second)
		go r.sess.Receive(ctx, protocol.Message{T: protocol.TSub, Doc: doc})
		for range 100 {
			runtime.Gosched() // let the subscription reach the session's inbox
		}
		r.send.gate.Store(nil)
		close(gate)
		r.closed(t, protocol.CloseTokenExpired, "the session outlived its token")
		cancel()
		for len(r.send.out) > 0 {
			if m := <-r.send.out; m.T != protocol.TWelcome && m.T != protocol.TPing {
				t.Fatalf("session %d sent %+v after its token expired", i, m)
			}
		}
	}
}
