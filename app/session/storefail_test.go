package session_test

import (
	"context"
	"encoding/json"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/open-autoglm/autoglm/app/auth"
	"github.com/open-autoglm/autoglm/app/collections/schemafile"
	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/internal/stacktest"
	"github.com/open-autoglm/autoglm/app/merge"
	"github.com/open-autoglm/autoglm/app/protocol"
	"github.com/open-autoglm/autoglm/app/session"
)

// failingBackend is a session backend whose document reads fail while
// failing is set (a store outage).
type failingBackend struct {
	session.Backend
	failing atomic.Bool
}

func (b *failingBackend) Load(ctx context.Context, k core.Key) (core.Stored, error) {
	if b.failing.Load() {
		return core.Stored{}, core.Errorf(core.CodeUnavailable, "store down")
	}
	return b.Backend.Load(ctx, k)
}

func (b *failingBackend) Changes(ctx context.Context, k core.Key, from, to int64) ([]core.Change, error) {
	if b.failing.Load() {
		return nil, core.Errorf(core.CodeUnavailable, "store down")
	}
	return b.Backend.Changes(ctx, k, from, to)
}

// A store outage while a session works out what its reader may see of a
// document (subscribing, or after a token refresh) shows it nothing of the
// document until the rules could be evaluated again: not the deltas of the
// next changes, not presence. The next change evaluates them, and the
// session goes on from the view they give.
func TestStoreOutageShowsNothingUnderReadRules(t *testing.T) {
	cfg, err := schemafile.Parse("rules.yaml", []byte(`collections:
  forms:
    read_rules: {claims: {team: team}, roles: [admin]}
    fields:
      secret: {readable_by: [admin]}
`))
	if err != nil {
		t.Fatal(err)
	}
	policy := auth.Policy{Collections: cfg, Enforce: true}
	write := func(t *testing.T, st *stacktest.Stack, ops string) {
		t.Helper()
		var fo []merge.FieldOp
		if err := json.Unmarshal([]byte(ops), &fo); err != nil {
			t.Fatal(err)
		}
		if _, err := st.Eng.Do(context.Background(), key, core.Op{Ops: fo}); err != nil {
			t.Fatal(err)
		}
	}
	start := func(t *testing.T, ids ...auth.Identity) (*stacktest.Stack, *failingBackend, *session.Session, *sender) {
		st := stacktest.New(stacktest.Options{})
		b := &failingBackend{Backend: st.Eng}
		out := &sender{out: make(chan protocol.Message, 100)}
		n := 0
		s := session.New(session.Options{ID: "s", Policy: policy, Heartbeat: time.Hour,
			Authenticate: func(context.Context, string) (auth.Identity, error) {
				id := ids[min(n, len(ids)-1)]
				n++
				return id, nil
			}}, b, st.Hub, out)
		ctx, cancel := context.WithCancel(context.Background())
		t.Cleanup(cancel)
		go s.Run(ctx)
		if !s.Receive(ctx, protocol.Message{T: protocol.THello, Client: "c", Token: "t"}) {
			t.Fatal("session ended")
		}
		if m := nextMsg(t, out); m.T != protocol.TWelcome {
			t.Fatalf("got %+v, want welcome", m)
		}
		return st, b, s, out
	}
	noSecret := func(t *testing.T, what string, m protocol.Message) {
		t.Helper()
		if b, _ := json.Marshal(m); strings.Contains(string(b), "s3cret") || strings.Contains(string(b), "other-team") {
			t.Fatalf("%s: %s", what, b)
		}
	}
	red := auth.Identity{Subject: "u", Claims: map[string]string{"team": "red"}}
	admin := auth.Identity{Subject: "u", Roles: []string{"admin"}, Claims: map[string]string{"team": "red"}}

	t.Run("subscribe", func(t *testing.T) {
		st, b, s, out := start(t, red)
		write(t, st, `[{"op":"set","path":"team","value":"blue"}]`)
		write(t, st, `[{"op":"set","path":"secret","value":"s3cret"}]`)
		b.failing.Store(true)
		// A client resuming from version 2 (it says so).
		s.Receive(context.Background(), protocol.Message{T: protocol.TSub, Doc: doc, Since: 2})
		if m := nextMsg(t, out); m.T != protocol.TError || m.Code != core.CodeUnavailable {
			t.Fatalf("got %+v, want error unavailable", m)
		}
		nextMsg(t, out) // synced
		b.failing.Store(false)
		write(t, st, `[{"op":"set","path":"name","value":"other-team"}]`)
		m := nextMsg(t, out)
		noSecret(t, "after an outage, the next change of a document of another team", m)
		if m.T != protocol.TError || m.Code != core.CodeNotReadable || m.V != 3 {
			t.Fatalf("got %+v, want not_readable at version 3", m)
		}
	})
	t.Run("refresh", func(t *testing.T) {
		st, b, s, out := start(t, admin, red)
		write(t, st, `[{"op":"set","path":"team","value":"red"},{"op":"set","path":"secret","value":"s0"}]`)
		s.Receive(context.Background(), protocol.Message{T: protocol.TSub, Doc: doc})
		if m := nextMsg(t, out); m.T != protocol.TSnap || m.Data["secret"] != "s0" {
			t.Fatalf("admin subscribing: %+v", m)
		}
		nextMsg(t, out) // synced
		b.failing.Store(true)
		s.Receive(context.Background(), protocol.Message{T: protocol.TAuth, Token: "t2"})
		if m := nextMsg(t, out); m.T != protocol.TError || m.Code != core.CodeUnavailable {
			t.Fatalf("got %+v, want error unavailable", m)
		}
		nextMsg(t, out) // auth
		b.failing.Store(false)
		write(t, st, `[{"op":"set","path":"secret","value":"s3cret"},{"op":"set","path":"name","value":"n"}]`)
		m := nextMsg(t, out)
		noSecret(t, "after an outage during a refresh that lost the admin role", m)
		if m.T != protocol.TSnap || m.V != 2 || m.Data["name"] != "n" {
			t.Fatalf("got %+v, want a snapshot of the new view at version 2", m)
		}
	})
}
