package service_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/google/uuid"

	"github.com/open-autoglm/autoglm/app/config"
	"github.com/open-autoglm/autoglm/app/internal/daprtest"
	"github.com/open-autoglm/autoglm/app/internal/servicetest"
	"github.com/open-autoglm/autoglm/app/protocol"
)

const testSecret = "test-secret-test-secret-test-secret!"

func token(t testing.TB, sub string, ttl time.Duration, roles ...string) string {
	t.Helper()
	return servicetest.Token(t, testSecret, sub, ttl, nil, roles...)
}

// startSecured starts a replica on daprd with authentication on and API
// tokens between app and sidecar.
func startSecured(t *testing.T) *daprtest.Replica {
	return daprtest.Start(t, daprtest.Options{Config: func(c *config.Config) {
		c.Auth, c.JWTSecret = "jwt", testSecret
		c.AppAPIToken, c.DaprAPIToken = "app-token-"+uuid.NewString(), "dapr-token-"+uuid.NewString()
	}})
}

// rawWS is a bare WebSocket client for checking close codes.
type rawWS struct {
	t    testing.TB
	conn *websocket.Conn
}

func dialRaw(t testing.TB, url string) *rawWS {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{Subprotocols: []string{protocol.SubprotocolJSON}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.CloseNow() })
	return &rawWS{t: t, conn: c}
}

func (w *rawWS) send(m protocol.Message) {
	w.t.Helper()
	b, _ := protocol.Encode(m)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := w.conn.Write(ctx, websocket.MessageText, b); err != nil {
		w.t.Fatal(err)
	}
}

func (w *rawWS) sendRaw(typ websocket.MessageType, b []byte) {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := w.conn.Write(ctx, typ, b); err != nil {
		w.t.Fatal(err)
	}
}

// next reads the next non-heartbeat message, or returns the close code.
func (w *rawWS) next(timeout time.Duration) (protocol.Message, int) {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		if m, code := w.read(ctx); code != 0 || m.T != protocol.TPing {
			return m, code
		}
	}
}

// read returns the next message, heartbeats included, or the close code.
func (w *rawWS) read(ctx context.Context) (protocol.Message, int) {
	w.t.Helper()
	_, b, err := w.conn.Read(ctx)
	if err != nil {
		return protocol.Message{}, int(websocket.CloseStatus(err))
	}
	m, err := protocol.Decode(b)
	if err != nil {
		w.t.Fatalf("server sent undecodable %q", b)
	}
	return m, 0
}

func (w *rawWS) expect(typ string) protocol.Message {
	w.t.Helper()
	m, code := w.next(5 * time.Second)
	if m.T != typ {
		w.t.Fatalf("got %+v (close %d), want %q", m, code, typ)
	}
	return m
}

func (w *rawWS) expectClose(code int, within time.Duration) {
	w.t.Helper()
	m, got := w.next(within)
	if got != code {
		w.t.Fatalf("got %+v / close %d, want close %d", m, got, code)
	}
}

// TestAccess: with authentication on, every path checks who is calling.
// TestAccess runs the access rules in process: tokens, roles and owners on
// REST and WebSocket, token expiry and refresh.
func TestAccess(t *testing.T) {
	r := servicetest.Start(t, servicetest.Options{Secret: testSecret})
	id := uuid.NewString()[:8]
	ann := token(t, "ann", time.Hour, "user")
	bob := token(t, "bob", time.Hour, "user")
	viewer := token(t, "vic", time.Hour, "viewer")
	profile := r.URL() + "/v1/docs/profiles/p-" + id
	bearer := func(tok string) []string { return []string{"Authorization", "Bearer " + tok} }

	t.Run("REST", func(t *testing.T) {
		wantStatus(t, do(t, "GET", profile, ""), 401, "unauthorized")
		wantStatus(t, do(t, "GET", profile, "", bearer("garbage")...), 401, "unauthorized")
		wantStatus(t, do(t, "GET", profile, "", bearer(token(t, "ann", -time.Minute, "user"))...), 401, "unauthorized")
		wantStatus(t, do(t, "PUT", profile, `{"user_id":"ann","display_name":"Ann"}`, bearer(ann)...), 201, "")
		wantStatus(t, do(t, "GET", profile, "", bearer(ann)...), 200, "")
		wantStatus(t, do(t, "GET", profile, "", bearer(viewer)...), 403, "forbidden")                                                                   // wrong role
		wantStatus(t, do(t, "PATCH", profile, `{"ops":[{"op":"set","path":"display_name","value":"Bob was here"}]}`, bearer(bob)...), 403, "forbidden") // another owner's document
		wantStatus(t, do(t, "PATCH", profile, `{"ops":[{"op":"set","path":"user_id","value":"bob"}]}`, bearer(ann)...), 403, "forbidden")               // giving it away
		wantStatus(t, do(t, "GET", profile+"/changes?since=0", "", bearer(viewer)...), 403, "forbidden")                                                // catch-up is a read
		wantStatus(t, do(t, "GET", r.URL()+"/v1/docs/profiles", "", bearer(viewer)...), 403, "forbidden")
		wantStatus(t, do(t, "DELETE", profile, "", bearer(bob)...), 403, "forbidden")
		g := do(t, "GET", profile, "", bearer(ann)...)
		if g.Body["data"].(map[string]any)["display_name"] != "Ann" || g.Body["version"] != 1.0 {
			t.Fatalf("refused writes changed the document: %s", g.Raw)
		}
		// Roles claimed in a header mean nothing with authentication on.
		wantStatus(t, do(t, "GET", profile, "", append(bearer(viewer), "X-Roles", "user")...), 403, "forbidden")
		// Health and version need no token (probes).
		wantStatus(t, do(t, "GET", r.URL()+"/healthz", ""), 200, "")
	})

	t.Run("WebSocket", func(t *testing.T) {
		w := dialRaw(t, r.WSURL())
		w.send(protocol.Message{T: protocol.THello, Client: "c"})
		w.expectClose(protocol.CloseUnauthorized, 5*time.Second)

		w = dialRaw(t, r.WSURL())
		w.send(protocol.Message{T: protocol.THello, Client: "c", Token: "forged"})
		w.expectClose(protocol.CloseUnauthorized, 5*time.Second)

		v := dialRaw(t, r.WSURL())
		v.send(protocol.Message{T: protocol.THello, Client: "v", Token: viewer, Roles: []string{"user"}})
		v.expect(protocol.TWelcome)
		v.send(protocol.Message{T: protocol.TSub, Doc: "profiles/p-" + id, Since: 0})
		if m := v.expect(protocol.TError); m.Code != "forbidden" {
			t.Fatalf("sub without read role: %+v", m)
		}
		v.send(protocol.Message{T: protocol.TOp, Doc: "profiles/p-" + id, Op: 1, Ops: nil})
		if m := v.expect(protocol.TReject); m.Code == "" {
			t.Fatalf("op without write role: %+v", m)
		}

		b := dialRaw(t, r.WSURL())
		b.send(protocol.Message{T: protocol.THello, Client: "b", Token: bob})
		b.expect(protocol.TWelcome)
		b.send(protocol.Message{T: protocol.TOp, Doc: "profiles/p-" + id, Op: 1, Ops: toFieldOps(t, []byte(`[{"op":"set","path":"display_name","value":"x"}]`))})
		if m := b.expect(protocol.TReject); m.Code != "forbidden" {
			t.Fatalf("write to another owner's document: %+v", m)
		}
	})

	t.Run("TokenExpiryAndRefresh", func(t *testing.T) {
		doc := "forms/tok-" + id
		wantStatus(t, do(t, "PUT", r.URL()+"/v1/docs/"+doc, `{"title":"t"}`, bearer(token(t, "ed", time.Hour, "editor"))...), 201, "")
		w := dialRaw(t, r.WSURL())
		w.send(protocol.Message{T: protocol.THello, Client: "exp", Token: token(t, "ed", 2*time.Second, "editor")})
		w.expect(protocol.TWelcome)
		w.send(protocol.Message{T: protocol.TSub, Doc: doc})
		w.expect(protocol.TSnap)
		w.expect(protocol.TSynced)
		// Refresh before expiry: the subscription carries on.
		w.send(protocol.Message{T: protocol.TAuth, Token: token(t, "ed", time.Hour, "editor")})
		if m := w.expect(protocol.TAuth); m.TS <= time.Now().UnixMilli() {
			t.Fatalf("refresh answer %+v", m)
		}
		// Another subject's token is not a refresh.
		w.send(protocol.Message{T: protocol.TAuth, Token: token(t, "mallory", time.Hour, "editor")})
		if m := w.expect(protocol.TError); m.Code != "forbidden" {
			t.Fatalf("refresh as someone else: %+v", m)
		}
		time.Sleep(2500 * time.Millisecond) // past the first token's expiry
		wantStatus(t, do(t, "PATCH", r.URL()+"/v1/docs/"+doc, `{"ops":[{"op":"set","path":"title","value":"t2"}]}`, bearer(token(t, "ed", time.Hour, "editor"))...), 200, "")
		if m := w.expect(protocol.TDelta); m.V != 2 {
			t.Fatalf("after refresh: %+v", m)
		}
		// Without a refresh, the connection closes when the token expires.
		x := dialRaw(t, r.WSURL())
		x.send(protocol.Message{T: protocol.THello, Client: "exp2", Token: token(t, "ed", time.Second, "editor")})
		x.expect(protocol.TWelcome)
		x.expectClose(protocol.CloseTokenExpired, 5*time.Second)
	})

}

// TestSidecarBoundary: the routes daprd calls and daprd's own API both
// demand their token, so anyone who can reach the app cannot inject
// broadcasts.
func TestSidecarBoundary(t *testing.T) {
	r := startSecured(t)
	t.Run("Tokens", func(t *testing.T) {
		forged := `{"id":"1","type":"com.dapr.event.sent","data":{"node":"x","changes":[{"doc":"forms/f","v":1,"pv":0}]}}`
		for _, h := range [][]string{nil, {"dapr-api-token", "wrong"}} {
			req, _ := http.NewRequest("POST", r.URL()+"/dapr/events/changes", strings.NewReader(forged))
			for i := 0; i+1 < len(h); i += 2 {
				req.Header.Set(h[i], h[i+1])
			}
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			if res.StatusCode != 401 {
				t.Fatalf("forged delivery with %v: %d", h, res.StatusCode)
			}
		}
		if res := do(t, "GET", r.URL()+"/dapr/subscribe", ""); res.Status != 401 {
			t.Fatalf("subscription list without the token: %d", res.Status)
		}
		// daprd itself presents the token: its metadata lists the subscription.
		md := do(t, "GET", r.DaprURL()+"/v1.0/metadata", "", "dapr-api-token", r.Cfg.DaprAPIToken)
		if !strings.Contains(md.Raw, fmt.Sprintf("%q", r.Cfg.BroadcastTopic)) {
			t.Fatalf("daprd did not load the subscription: %s", md.Raw)
		}
		if res := do(t, "GET", r.DaprURL()+"/v1.0/metadata", ""); res.Status != 401 {
			t.Fatalf("daprd API without its token: %d", res.Status)
		}
	})
}
