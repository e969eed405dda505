package httpapi_test

// With authentication on, a client is who its token says on every
// transport (REST, WebSocket JSON and binary, SSE, long-poll): client ids
// are bound to the token's subject, presence names the subject, fallback
// sessions answer only their owner, a refreshed token is checked against
// every subscription, and refusals carry nothing the caller may not read.
// The HTTP API runs in-process over the in-memory store.

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/google/uuid"

	"github.com/open-autoglm/autoglm/app/client"
	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/internal/servicetest"
	"github.com/open-autoglm/autoglm/app/merge"
	"github.com/open-autoglm/autoglm/app/protocol"
)

const idSecret = "identity-test-secret-identity-test!"

// idCollections: vault is strict and readable by readers only; writers may
// write it without reading it. Other collections are open to anyone signed
// in.
const idCollections = `
allow_unknown: true
collections:
  vault:
    policy: strict
    read_roles: [reader]
    write_roles: [reader, writer]
`

func idToken(t *testing.T, sub string, roles ...string) string {
	t.Helper()
	return idTokenWith(t, sub, nil, roles...)
}

// idTokenWith is idToken with extra string claims ("team").
func idTokenWith(t *testing.T, sub string, extra map[string]string, roles ...string) string {
	t.Helper()
	claims := map[string]any{}
	for k, v := range extra {
		claims[k] = v
	}
	return servicetest.Token(t, idSecret, sub, time.Hour, claims, roles...)
}

// startAuthed serves the HTTP API with JWT authentication over the
// in-memory store and returns its base URL.
func startAuthed(t *testing.T) string {
	t.Helper()
	return startAuthedWith(t, idCollections)
}

// startAuthedWith is startAuthed with another collections file.
func startAuthedWith(t *testing.T, file string) string {
	t.Helper()
	return servicetest.Start(t, servicetest.Options{Collections: file, Secret: idSecret}).URL()
}

// syncConn is one client connection of any sync transport.
type syncConn interface {
	send(t *testing.T, m protocol.Message)
	// next returns the next message that is not a ping (pings are answered).
	next(t *testing.T) protocol.Message
}

type syncTransport struct {
	name string
	// open says hello with token and client id and returns the connection
	// and its welcome.
	open func(t *testing.T, base, token, client string) (syncConn, protocol.Message)
}

var syncTransports = []syncTransport{
	{"ws-json", openWSAs(false)},
	{"ws-binary", openWSAs(true)},
	{"sse", func(t *testing.T, base, token, client string) (syncConn, protocol.Message) {
		s := openSSEAs(t, base, helloJSON(t, token, client), token)
		return sseConn{s}, s.welcome
	}},
	{"longpoll", func(t *testing.T, base, token, client string) (syncConn, protocol.Message) {
		p := openPollAs(t, base, helloJSON(t, token, client), token)
		return pollConn{p}, p.welcome
	}},
}

func helloJSON(t *testing.T, token, client string) string {
	t.Helper()
	b, err := protocol.Encode(protocol.Message{T: protocol.THello, Client: client, Token: token, Proto: protocol.Version})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

type wsConn struct {
	c      *websocket.Conn
	binary bool
}

func openWSAs(binary bool) func(t *testing.T, base, token, client string) (syncConn, protocol.Message) {
	return func(t *testing.T, base, token, client string) (syncConn, protocol.Message) {
		t.Helper()
		sub := protocol.SubprotocolJSON
		if binary {
			sub = protocol.SubprotocolBinary
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, _, err := websocket.Dial(ctx, protocol.SyncURL(base), &websocket.DialOptions{Subprotocols: []string{sub}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.CloseNow() })
		w := wsConn{c: c, binary: binary}
		w.send(t, protocol.Message{T: protocol.THello, Client: client, Token: token, Proto: protocol.Version})
		welcome := w.next(t)
		if welcome.T != protocol.TWelcome {
			t.Fatalf("hello answered with %+v", welcome)
		}
		return w, welcome
	}
}

func (w wsConn) send(t *testing.T, m protocol.Message) {
	t.Helper()
	typ, encode := websocket.MessageText, protocol.Encode
	if w.binary {
		typ, encode = websocket.MessageBinary, protocol.EncodeFrames
	}
	b, err := encode(m)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.c.Write(context.Background(), typ, b); err != nil {
		t.Fatal(err)
	}
}

func (w wsConn) next(t *testing.T) protocol.Message {
	t.Helper()
	for {
		_, b, err := readFrame(w.c)
		if err != nil {
			t.Fatal(err)
		}
		var m protocol.Message
		if w.binary {
			ms, err := protocol.DecodeFrames(b, 0)
			if err != nil {
				t.Fatal(err)
			}
			m = ms[0]
		} else if m, err = protocol.Decode(b); err != nil {
			t.Fatal(err)
		}
		if m.T != protocol.TPing {
			return m
		}
		w.send(t, protocol.Message{T: protocol.TPong, TS: m.TS})
	}
}

type sseConn struct{ s *sseStream }

func (c sseConn) send(t *testing.T, m protocol.Message) { t.Helper(); c.s.post(t, encoded(t, m)) }
func (c sseConn) next(t *testing.T) protocol.Message    { t.Helper(); return c.s.next(t) }

type pollConn struct{ p *poller }

func (c pollConn) send(t *testing.T, m protocol.Message) { t.Helper(); c.p.post(t, encoded(t, m)) }
func (c pollConn) next(t *testing.T) protocol.Message    { t.Helper(); return c.p.next(t) }

func encoded(t *testing.T, m protocol.Message) string {
	t.Helper()
	b, err := protocol.Encode(m)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// want reads the next message and checks its type and version.
func want(t *testing.T, c syncConn, typ string, v int64) protocol.Message {
	t.Helper()
	m := c.next(t)
	wantMsg(t, m, typ, v)
	return m
}

func setOp(doc string, op uint64, base int64, field string, value any) protocol.Message {
	v, _ := json.Marshal(value)
	return protocol.Message{T: protocol.TOp, Doc: doc, Op: op, Base: base, Ops: []merge.FieldOp{{Op: merge.KindSet, Path: field, Value: v}}}
}

// restSet PATCHes one field as token, with a client id and op id when
// given.
func restSet(t *testing.T, base, token, doc, client, opID string, baseV int64, field string, value any) httpResult {
	t.Helper()
	v, _ := json.Marshal(value)
	hdr := bearer(token)
	if client != "" {
		hdr = append(hdr, "X-Client-ID", client)
	}
	if opID != "" {
		hdr = append(hdr, "X-Op-ID", opID)
	}
	return call(t, "PATCH", base+"/v1/docs/"+doc, "application/json",
		[]byte(fmt.Sprintf(`{"base":%d,"ops":[{"op":"set","path":%q,"value":%s}]}`, baseV, field, v)), hdr...)
}

func wantWritten(t *testing.T, r httpResult, version int64) {
	t.Helper()
	var b struct {
		Version   int64
		Duplicate bool
	}
	_ = json.Unmarshal(r.body, &b)
	if r.status >= 300 || b.Version != version || b.Duplicate {
		t.Fatalf("write: %d %s, want version %d applied (not a duplicate)", r.status, r.body, version)
	}
}

const maxOpID = "18446744073709551615"

// TestClientIDsAreBoundToTheToken: another identity writing with a
// victim's client id (as the victim asks for it, or as the service shows
// it) at the highest op id must not turn the victim's ops into duplicates,
// on any transport.
func TestClientIDsAreBoundToTheToken(t *testing.T) {
	t.Parallel()
	base := startAuthed(t)
	alice, mallory := idToken(t, "alice", "reader"), idToken(t, "mallory", "reader")

	t.Run("rest", func(t *testing.T) {
		doc := "notes/spoof-rest"
		for i, claimed := range []string{"tab", "tab@alice"} {
			r := restSet(t, base, mallory, doc, claimed, maxOpID, 0, "title", "mallory")
			wantWritten(t, r, int64(i+1))
			if got := r.header.Get("X-Client-ID"); !strings.HasSuffix(got, "@mallory") {
				t.Fatalf("mallory asking for %q got client id %q", claimed, got)
			}
		}
		r := restSet(t, base, alice, doc, "tab", "1", 0, "title", "alice")
		wantWritten(t, r, 3)
		if got := r.header.Get("X-Client-ID"); got != "tab@alice" {
			t.Fatalf("alice's client id %q", got)
		}
		// A retry is still recognised as one.
		r = restSet(t, base, alice, doc, "tab", "1", 0, "title", "alice")
		if !strings.Contains(string(r.body), `"duplicate":true`) {
			t.Fatalf("retry: %d %s", r.status, r.body)
		}
	})
	for _, tr := range syncTransports {
		t.Run(tr.name, func(t *testing.T) {
			doc, client := "notes/spoof-"+tr.name, "tab-"+tr.name
			// Over REST with the id alice asks for, over this transport
			// with the id the service gives her.
			wantWritten(t, restSet(t, base, mallory, doc, client, maxOpID, 0, "title", "m1"), 1)
			m, mw := tr.open(t, base, mallory, client+"@alice")
			m.send(t, setOp(doc, 1<<64-1, 0, "title", "m2"))
			if a := want(t, m, protocol.TAck, 2); a.Dup {
				t.Fatalf("mallory's op: %+v", a)
			}

			a, aw := tr.open(t, base, alice, client)
			a.send(t, protocol.Message{T: protocol.TSub, Doc: doc, Since: 2})
			want(t, a, protocol.TSynced, 2)
			a.send(t, setOp(doc, 1, 2, "title", "alice"))
			if ack := want(t, a, protocol.TAck, 3); ack.Dup {
				t.Fatalf("alice's op answered as a duplicate: %+v", ack)
			}
			if aw.Client != client+"@alice" || mw.Client == aw.Client {
				t.Fatalf("welcome: alice is %q, mallory is %q", aw.Client, mw.Client)
			}
			// Mallory sees alice's change as hers, not as its own.
			m.send(t, protocol.Message{T: protocol.TSub, Doc: doc, Since: 2})
			if d := want(t, m, protocol.TDelta, 3); d.By != aw.Client {
				t.Fatalf("delta by %q", d.By)
			}
			// Reconnecting with the id the welcome returned keeps alice's op
			// ids: her retry is answered as one.
			a2, aw2 := tr.open(t, base, alice, aw.Client)
			a2.send(t, setOp(doc, 1, 2, "title", "alice"))
			if ack := want(t, a2, protocol.TAck, 3); !ack.Dup || aw2.Client != aw.Client {
				t.Fatalf("retry after reconnect: %+v (client %q)", ack, aw2.Client)
			}
		})
	}
}

// TestPresenceNamesTheTokenSubject: presence set by a client claiming
// someone else's id reaches watchers under the claimant's own subject.
func TestPresenceNamesTheTokenSubject(t *testing.T) {
	t.Parallel()
	base := startAuthed(t)
	alice, mallory := idToken(t, "alice", "reader"), idToken(t, "mallory", "reader")
	for _, tr := range syncTransports {
		t.Run(tr.name, func(t *testing.T) {
			doc := "notes/presence-" + tr.name
			watcher, ww := syncTransports[0].open(t, base, alice, "watch")
			watcher.send(t, protocol.Message{T: protocol.TSub, Doc: doc})
			want(t, watcher, protocol.TSynced, 0)

			m, _ := tr.open(t, base, mallory, ww.Client)
			m.send(t, protocol.Message{T: protocol.TSub, Doc: doc})
			want(t, m, protocol.TSynced, 0)
			m.send(t, protocol.Message{T: protocol.TPresence, Doc: doc, Data: map[string]any{"field": "title"}})
			p := watcher.next(t)
			if p.T != protocol.TPresence || p.By != "mallory" || p.Client == ww.Client || !strings.HasSuffix(p.Client, "@mallory") {
				t.Fatalf("presence: %+v (alice is %q)", p, ww.Client)
			}
		})
	}
}

// TestGoClientAdoptsItsBoundID: the Go client takes the id its welcome
// returns, so it recognises its own changes (acks, and deltas of its ops
// after a reconnect) under the bound id, and resumes with it.
func TestGoClientAdoptsItsBoundID(t *testing.T) {
	t.Parallel()
	base := startAuthed(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, protocol.SyncURL(base),
		client.Options{ClientID: "go-1", Token: idToken(t, "alice", "reader")})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	doc := "notes/go-client"
	d, err := c.Subscribe(ctx, doc, 0)
	if err != nil {
		t.Fatal(err)
	}
	set := merge.FieldOp{Op: merge.KindSet, Path: "title", Value: json.RawMessage(`"x"`)}
	if a, err := c.Do(ctx, doc, 0, set); err != nil || a.Version != 1 || a.Dup {
		t.Fatalf("op: %+v %v", a, err)
	}
	if c.ID() != "go-1@alice" {
		t.Fatalf("client id %q", c.ID())
	}
	c.Drop()
	if a, err := c.Do(ctx, doc, 1, set); err != nil || a.Version != 2 || a.Dup {
		t.Fatalf("op after the reconnect: %+v %v", a, err)
	}
	if err := d.WaitVersion(ctx, 2); err != nil || c.ID() != "go-1@alice" {
		t.Fatalf("after the reconnect: version %d, id %q, %v", d.Version(), c.ID(), err)
	}
}

// TestFallbackSessionsAnswerOnlyTheirOwner: a session id alone grants
// nothing; every request to an SSE or long-poll session needs the
// credentials of the identity that opened it.
func TestFallbackSessionsAnswerOnlyTheirOwner(t *testing.T) {
	t.Parallel()
	base := startAuthed(t)
	alice, mallory := idToken(t, "alice", "reader"), idToken(t, "mallory", "reader")
	s := openSSEAs(t, base, helloJSON(t, alice, "sse-owner"), alice)
	p := openPollAs(t, base, helloJSON(t, alice, "lp-owner"), alice)
	events, poll := base+"/v1/events/"+s.session, base+"/v1/poll/"+p.session
	get := fmt.Sprintf("%s?after=%d", poll, p.seq)
	ping := msgs(`{"t":"ping","ts":7}`)
	cases := []struct {
		name, method, url string
		body              []byte
		hdr               []string
		status            int
		code              string
	}{
		{"sse post without credentials", "POST", events, ping, nil, 401, "unauthorized"},
		{"sse post with a bad token", "POST", events, ping, bearer("not.a.token"), 401, "unauthorized"},
		{"sse post by another identity", "POST", events, ping, bearer(mallory), 403, "forbidden"},
		{"sse post by another identity in the query", "POST", events + "?access_token=" + mallory, ping, nil, 403, "forbidden"},
		{"poll post without credentials", "POST", poll, ping, nil, 401, "unauthorized"},
		{"poll post by another identity", "POST", poll, ping, bearer(mallory), 403, "forbidden"},
		{"poll without credentials", "GET", get, nil, nil, 401, "unauthorized"},
		{"poll by another identity", "GET", get, nil, bearer(mallory), 403, "forbidden"},
		{"poll by another identity in the query", "GET", get + "&access_token=" + mallory, nil, nil, 403, "forbidden"},
		{"unknown session", "POST", base + "/v1/events/" + uuid.NewString(), ping, bearer(mallory), 404, "not_found"},
		{"sse post by the owner", "POST", events, ping, bearer(alice), 204, ""},
		{"poll post by the owner in the query", "POST", poll + "?access_token=" + alice, ping, nil, 204, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctype := ""
			if c.body != nil {
				ctype = "application/json"
			}
			r := call(t, c.method, c.url, ctype, c.body, c.hdr...)
			if r.status != c.status || r.code != c.code {
				t.Fatalf("got %d %q, want %d %q: %s", r.status, r.code, c.status, c.code, r.body)
			}
		})
	}
	// Only the owner's pings were taken: one pong each.
	if m := s.next(t); m.T != protocol.TPong || m.TS != 7 {
		t.Fatalf("sse: %+v", m)
	}
	if m := p.next(t); m.T != protocol.TPong || m.TS != 7 {
		t.Fatalf("long-poll: %+v", m)
	}
}

// TestRefreshEndsSubscriptionsNoLongerAllowed: after an auth refresh whose
// roles no longer allow reading a watched document, that subscription ends
// with access_revoked and none of its changes are delivered; the others
// go on.
func TestRefreshEndsSubscriptionsNoLongerAllowed(t *testing.T) {
	t.Parallel()
	base := startAuthed(t)
	reader, writer := idToken(t, "alice", "reader"), idToken(t, "bob", "writer")
	for _, tr := range syncTransports {
		t.Run(tr.name, func(t *testing.T) {
			vault, notes := "vault/refresh-"+tr.name, "notes/refresh-"+tr.name
			wantWritten(t, restSet(t, base, reader, vault, "", "", 0, "title", "secret"), 1)
			observer, _ := syncTransports[0].open(t, base, reader, "observer")
			observer.send(t, protocol.Message{T: protocol.TSub, Doc: vault, Since: 1})
			want(t, observer, protocol.TSynced, 1)

			c, _ := tr.open(t, base, reader, "tab")
			c.send(t, protocol.Message{T: protocol.TSub, Doc: vault})
			want(t, c, protocol.TSnap, 1)
			want(t, c, protocol.TSynced, 1)
			c.send(t, protocol.Message{T: protocol.TSub, Doc: notes})
			want(t, c, protocol.TSynced, 0)

			c.send(t, protocol.Message{T: protocol.TAuth, Token: idToken(t, "alice", "writer")})
			if e := c.next(t); e.T != protocol.TError || e.Code != core.CodeAccessRevoked || e.Doc != vault {
				t.Fatalf("after the refresh: %+v", e)
			}
			if m := c.next(t); m.T != protocol.TAuth {
				t.Fatalf("refresh answer: %+v", m)
			}
			// A change of the vault document reaches the hub (the observer
			// sees it) before a change of the notes document is made: the
			// refreshed session must skip the first and deliver the second.
			wantWritten(t, restSet(t, base, writer, vault, "", "", 1, "title", "new secret"), 2)
			want(t, observer, protocol.TDelta, 2)
			wantWritten(t, restSet(t, base, writer, notes, "", "", 0, "title", "open"), 1)
			if d := c.next(t); d.T != protocol.TDelta || d.Doc != notes {
				t.Fatalf("after the revocation: %+v", d)
			}
		})
	}
}

// TestRefusalsCarryNothingTheCallerMayNotRead: a writer who may not read
// the vault collection gets conflicts without the stored values, and acks
// without effective ops; a reader still gets them.
func TestRefusalsCarryNothingTheCallerMayNotRead(t *testing.T) {
	t.Parallel()
	base := startAuthed(t)
	reader, writer := idToken(t, "alice", "reader"), idToken(t, "bob", "writer")
	// stored creates a vault document at version 2.
	stored := func(t *testing.T, doc string) {
		t.Helper()
		wantWritten(t, restSet(t, base, reader, doc, "", "", 0, "title", "top secret"), 1)
		wantWritten(t, restSet(t, base, reader, doc, "", "", 1, "tags", []string{"secret-tag"}), 2)
		wantErr(t, call(t, "GET", base+"/v1/docs/"+doc, "", nil, bearer(writer)...), 403, "forbidden")
	}

	// conflictOf checks a stale write's refusal: versions only for the
	// writer, the values for the reader.
	conflictOf := func(t *testing.T, raw []byte, details any, readable bool) {
		t.Helper()
		d, _ := details.(map[string]any)
		if d["base"] != float64(1) || d["current"] != float64(2) {
			t.Fatalf("details %s", raw)
		}
		_, theirs := d["theirs"]
		if leaked := strings.Contains(string(raw), "secret"); theirs != readable || leaked != readable {
			t.Fatalf("readable %v, got %s", readable, raw)
		}
	}
	t.Run("rest", func(t *testing.T) {
		doc := "vault/leak-rest"
		stored(t, doc)
		for _, c := range []struct {
			token    string
			readable bool
		}{{writer, false}, {reader, true}} {
			r := restSet(t, base, c.token, doc, "", "", 1, "title", "guess")
			wantErr(t, r, 409, "conflict")
			var b struct{ Error struct{ Details any } }
			_ = json.Unmarshal(r.body, &b)
			conflictOf(t, r.body, b.Error.Details, c.readable)
		}
	})
	for _, tr := range syncTransports {
		t.Run(tr.name, func(t *testing.T) {
			doc := "vault/leak-" + tr.name
			stored(t, doc)
			c, _ := tr.open(t, base, writer, "w")
			c.send(t, setOp(doc, 1, 1, "title", "guess"))
			rej := c.next(t)
			raw, _ := json.Marshal(rej)
			if rej.T != protocol.TReject || rej.Code != core.CodeConflict {
				t.Fatalf("stale op: %s", raw)
			}
			conflictOf(t, raw, rej.Details, false)
			// An add to a set travels as a set of the whole resulting
			// array: as the ack's effective ops it would show the writer
			// every stored element.
			c.send(t, protocol.Message{T: protocol.TOp, Doc: doc, Op: 2, Base: 2, Ops: []merge.FieldOp{{Op: merge.KindAdd, Path: "tags", Value: json.RawMessage(`"mine"`)}}})
			if ack := want(t, c, protocol.TAck, 3); ack.Ops != nil {
				t.Fatalf("writer's ack: %+v", ack)
			}
		})
	}
}
