package session_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/open-autoglm/autoglm/app/auth"
	"github.com/open-autoglm/autoglm/app/collections/schemafile/schemafiletest"
	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/engine"
	"github.com/open-autoglm/autoglm/app/internal/stacktest"
	"github.com/open-autoglm/autoglm/app/merge"
	"github.com/open-autoglm/autoglm/app/protocol"
	"github.com/open-autoglm/autoglm/app/session"
)

// sharedSender records the shared deltas a session sends.
type sharedSender struct {
	sender
	shared chan *protocol.Shared
}

func (s *sharedSender) SendShared(_ context.Context, m *protocol.Shared) error {
	s.shared <- m
	return nil
}

// watch runs a session of st on a new sharedSender until ctx ends, sends
// it hello and sub, and reads what it sends up to the subscription's
// synced.
func watch(t *testing.T, ctx context.Context, st *stacktest.Stack, opt session.Options, hello, sub protocol.Message) *sharedSender {
	t.Helper()
	out := &sharedSender{sender: sender{out: make(chan protocol.Message, 10)}, shared: make(chan *protocol.Shared, 10)}
	s := session.New(opt, st.Eng, st.Hub, out)
	go s.Run(ctx)
	s.Receive(ctx, hello)
	s.Receive(ctx, sub)
	for m := nextMsg(t, &out.sender); m.T != protocol.TSynced; m = nextMsg(t, &out.sender) {
	}
	return out
}

// nextShared takes the next shared delta of each watcher.
func nextShared(t *testing.T, outs []*sharedSender) []*protocol.Shared {
	t.Helper()
	got := make([]*protocol.Shared, len(outs))
	for i, out := range outs {
		select {
		case got[i] = <-out.shared:
		case <-time.After(3 * time.Second):
			t.Fatalf("watcher %d got no shared delta", i)
		}
	}
	return got
}

// Watchers of a document with the same view get one delta message, encoded
// once; each view gets its own, without what it may not read.
func TestWatchersShareOneDeltaPerView(t *testing.T) {
	cfg := schemafiletest.MustParse(t, `
collections:
  docs:
    fields:
      secret: {readable_by: [admin]}
`)
	policy := auth.Policy{Collections: cfg, Enforce: true}
	st := stacktest.New(stacktest.Options{Engine: engine.Options{Collections: cfg, LogWindow: 10}})
	eng := st.Eng
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	k := core.Key{Collection: "docs", ID: "d"}
	var outs []*sharedSender
	for i := range 6 {
		id := auth.Identity{Subject: fmt.Sprint("u", i)}
		if i%2 == 0 {
			id.Roles = []string{"admin"}
		}
		outs = append(outs, watch(t, ctx, st, session.Options{ID: id.Subject, Policy: policy, Heartbeat: time.Hour,
			Authenticate: func(context.Context, string) (auth.Identity, error) { return id, nil }},
			protocol.Message{T: protocol.THello, Token: "t"}, protocol.Message{T: protocol.TSub, Doc: k.String()}))
	}
	if _, err := eng.Do(ctx, k, core.Op{ClientID: "w", OpID: 1, Ops: []merge.FieldOp{
		{Op: merge.KindSet, Path: "secret", Value: json.RawMessage(`"s3cr3t"`)},
		{Op: merge.KindSet, Path: "name", Value: json.RawMessage(`"n"`)}}}); err != nil {
		t.Fatal(err)
	}
	got := nextShared(t, outs)
	for i := range got {
		if got[i] != got[i%2] {
			t.Fatalf("watcher %d has the view of watcher %d but another message", i, i%2)
		}
	}
	if got[0] == got[1] {
		t.Fatal("two views share one message")
	}
	admin, _ := got[0].JSON()
	other, _ := got[1].JSON()
	if !strings.Contains(string(admin), "s3cr3t") || strings.Contains(string(other), "s3cr3t") || !strings.Contains(string(other), `"name"`) {
		t.Fatalf("admin's delta %s, the other view's %s", admin, other)
	}
}

// Proto 2 watchers that gave the document the same handle share one
// compact variant of a delta, encoded once; another handle gets its own.
// The author's id goes along the first time only.
func TestCompactVariantsAreShared(t *testing.T) {
	st := stacktest.New(stacktest.Options{Engine: engine.Options{LogWindow: 10}})
	eng := st.Eng
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	k := core.Key{Collection: "docs", ID: "compact"}
	handles := []uint64{1, 1, 1, 2}
	var outs []*sharedSender
	for i, hd := range handles {
		outs = append(outs, watch(t, ctx, st, session.Options{ID: fmt.Sprint("s", i), Node: "n1", Heartbeat: time.Hour},
			protocol.Message{T: protocol.THello, Client: fmt.Sprint("c", i), Proto: 2},
			protocol.Message{T: protocol.TSub, Doc: k.String(), H: hd}))
	}
	for round := range 2 {
		if _, err := eng.Do(ctx, k, core.Op{ClientID: "writer-with-a-long-id", OpID: uint64(round + 1),
			Ops: []merge.FieldOp{{Op: merge.KindSet, Path: "name", Value: json.RawMessage(`"n"`)}}}); err != nil {
			t.Fatal(err)
		}
		got := nextShared(t, outs)
		if got[0] != got[1] || got[0] != got[2] || got[0] == got[3] {
			t.Fatalf("round %d: variants %p %p %p %p", round, got[0], got[1], got[2], got[3])
		}
		b, _ := got[0].JSON()
		named := strings.Contains(string(b), "writer-with-a-long-id")
		if got[0].Msg.H != 1 || got[3].Msg.H != 2 || named != (round == 0) || strings.Contains(string(b), "forms") {
			t.Fatalf("round %d: %s", round, b)
		}
	}
}
