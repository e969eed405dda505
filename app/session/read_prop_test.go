package session_test

// A property of the read rules: for random documents, rules, identities and
// change sequences, under every conflict policy, what a reader holds after
// applying everything it received equals the server's document as the
// rules show it to that reader, at every version it is told about; it never
// holds a hidden value; its versions stay dense while it may read; and a
// later catch-up from any version it held ends in the same state.

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/open-autoglm/autoglm/app/auth"
	"github.com/open-autoglm/autoglm/app/collections"
	"github.com/open-autoglm/autoglm/app/collections/schemafile"
	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/engine"
	"github.com/open-autoglm/autoglm/app/internal/stacktest"
	"github.com/open-autoglm/autoglm/app/merge"
	"github.com/open-autoglm/autoglm/app/protocol"
	"github.com/open-autoglm/autoglm/app/session"
)

var propKey = core.Key{Collection: "docs", ID: "d1"}

// randomRules writes a collections file for "docs" with random row and
// field rules over the fields a, b, n, x, x.y, x.z, the owner field o and the
// team field t (readable_by is declared on top-level fields).
func randomRules(rng *rand.Rand, policy string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "collections:\n  docs:\n    policy: %s\n    owner_field: o\n", policy)
	var rows []string
	if rng.IntN(2) == 0 {
		rows = append(rows, "owner: true")
	}
	if rng.IntN(2) == 0 {
		rows = append(rows, "claims: {t: team}")
	}
	if rng.IntN(2) == 0 {
		rows = append(rows, "roles: [r2]")
	}
	if len(rows) > 0 && rng.IntN(4) > 0 {
		fmt.Fprintf(&b, "    read_rules: {%s}\n", strings.Join(rows, ", "))
	}
	b.WriteString("    fields:\n")
	for _, f := range []string{"a", "b", "x", "t"} {
		var by []string
		for _, r := range []string{"owner", "r1", "r2"} {
			if rng.IntN(2) == 0 {
				by = append(by, r)
			}
		}
		if len(by) > 0 && rng.IntN(2) == 0 {
			fmt.Fprintf(&b, "      %s: {readable_by: [%s]}\n", f, strings.Join(by, ", "))
		}
	}
	b.WriteString("      n: {}\n")
	return b.String()
}

var propIdentities = []auth.Identity{
	{Subject: "u1", Roles: []string{"r1"}, Claims: map[string]string{"team": "A"}},
	{Subject: "u2", Roles: []string{"r2"}, Claims: map[string]string{"team": "B"}},
	{Subject: "u3", Claims: map[string]string{"team": "A"}},
	{Subject: "u4", Roles: []string{"r1", "r2"}},
}

func randomValue(rng *rand.Rand, path string) any {
	switch path {
	case "o":
		return []string{"u1", "u2", "u3", "u9"}[rng.IntN(4)]
	case "t":
		return []string{"A", "B"}[rng.IntN(2)]
	case "x":
		m := map[string]any{}
		if rng.IntN(2) == 0 {
			m["y"] = fmt.Sprintf("y%d", rng.IntN(100))
		}
		if rng.IntN(2) == 0 {
			m["z"] = fmt.Sprintf("secret-z%d", rng.IntN(100))
		}
		return m
	}
	return fmt.Sprintf("%s%d", path, rng.IntN(100))
}

func randomOps(rng *rand.Rand) []merge.FieldOp {
	paths := []string{"a", "b", "o", "t", "x", "x.y", "x.z", "n"}
	var ops []merge.FieldOp
	for range 1 + rng.IntN(3) {
		p := paths[rng.IntN(len(paths))]
		switch {
		case p == "n":
			ops = append(ops, merge.FieldOp{Op: merge.KindInc, Path: p, Value: json.RawMessage("1")})
		case rng.IntN(6) == 0:
			ops = append(ops, merge.FieldOp{Op: merge.KindUnset, Path: p})
		default:
			v, _ := json.Marshal(randomValue(rng, p))
			ops = append(ops, merge.FieldOp{Op: merge.KindSet, Path: p, Value: v})
		}
	}
	return ops
}

// holder is what a reader holds of the document.
type holder struct {
	v       int64
	denied  bool
	deleted bool
	data    map[string]any
}

func (h *holder) apply(t *testing.T, m protocol.Message) {
	t.Helper()
	switch {
	case m.T == protocol.TSnap:
		h.v, h.denied, h.deleted, h.data = m.V, false, m.Del, cloneData(m.Data)
	case m.T == protocol.TError && m.Code == core.CodeNotReadable:
		h.v, h.denied, h.deleted, h.data = m.V, true, false, nil
	case m.T == protocol.TDelta:
		if h.denied || m.V != h.v+1 {
			t.Fatalf("delta %d after version %d (denied %v): versions must be dense while readable", m.V, h.v, h.denied)
		}
		h.v = m.V
		if m.Del {
			h.deleted, h.data = true, nil
			break
		}
		if m.New || h.deleted || h.data == nil {
			h.data, h.deleted = map[string]any{}, false
		}
		if err := merge.ApplyPlain(h.data, m.Ops); err != nil {
			t.Fatalf("applying %+v: %v", m, err)
		}
	default:
		t.Fatalf("unexpected message %+v", m)
	}
}

func (h holder) clone() holder {
	if h.data != nil {
		h.data = cloneData(h.data)
	}
	return h
}

func cloneData(m map[string]any) map[string]any {
	b, _ := json.Marshal(m)
	var out map[string]any
	_ = json.Unmarshal(b, &out)
	if out == nil {
		out = map[string]any{}
	}
	return out
}

// neverHidden fails when m names a field view hides: as a key of its data
// or of an op's value, or as an op's path.
func neverHidden(t *testing.T, m protocol.Message, view collections.View) {
	t.Helper()
	data, _ := json.Marshal(m.Data)
	ops, _ := json.Marshal(m.Ops)
	for _, f := range view.Hidden {
		for _, bad := range []string{`"` + f + `":`, `"path":"` + f + `"`, `"path":"` + f + `.`} {
			if strings.Contains(string(data), bad) || strings.Contains(string(ops), bad) {
				t.Fatalf("%s shows the hidden field %s: data %s ops %s", m.T, f, data, ops)
			}
		}
	}
}

// want checks h against the stored document d as id may see it.
func (h *holder) want(t *testing.T, policy auth.Policy, id auth.Identity, d *core.Document, step string) {
	t.Helper()
	if d.Deleted {
		if h.data != nil && !h.deleted {
			t.Fatalf("%s: %s holds %v of a deleted document at version %d", step, id.Subject, h.data, d.Version)
		}
		return
	}
	view := policy.DocView(id, propKey.Collection, d)
	if view.Denied != h.denied {
		t.Fatalf("%s: %s at version %d: denied %v, want %v", step, id.Subject, d.Version, h.denied, view.Denied)
	}
	if view.Denied {
		return
	}
	want := cloneData(view.Data(d.Data()))
	got := cloneData(h.data)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%s: %s at version %d holds\n%v\nwant (view %v)\n%v\nstored %v", step, id.Subject, d.Version, got, view.Hidden, want, d.Data())
	}
}

func propSession(t *testing.T, ctx context.Context, st *stacktest.Stack, policy auth.Policy, id auth.Identity, name string) (*session.Session, *sender) {
	t.Helper()
	out := &sender{out: make(chan protocol.Message, 1000)}
	s := session.New(session.Options{ID: name, Policy: policy, Heartbeat: time.Hour,
		Authenticate: func(context.Context, string) (auth.Identity, error) { return id, nil }}, st.Eng, st.Hub, out)
	go s.Run(ctx)
	if !s.Receive(ctx, protocol.Message{T: protocol.THello, Client: name, Token: "t"}) {
		t.Fatal("session ended")
	}
	if m := nextMsg(t, out); m.T != protocol.TWelcome {
		t.Fatalf("got %+v, want welcome", m)
	}
	return s, out
}

func nextMsg(t *testing.T, out *sender) protocol.Message {
	t.Helper()
	select {
	case m := <-out.out:
		return m
	case <-time.After(3 * time.Second):
		t.Fatal("no message from the session")
	}
	return protocol.Message{}
}

func TestReadRulesProperty(t *testing.T) {
	seeds := 40
	if testing.Short() {
		seeds = 8
	}
	for _, policy := range []string{"lww", "crdt", "strict", "manual"} {
		for seed := range seeds {
			t.Run(fmt.Sprintf("%s/%d", policy, seed), func(t *testing.T) {
				runReadProperty(t, policy, uint64(seed))
			})
		}
	}
}

func runReadProperty(t *testing.T, policyName string, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 14))
	yaml := randomRules(rng, policyName)
	cfg, err := schemafile.Parse("prop.yaml", []byte(yaml))
	if err != nil {
		t.Fatalf("%v\n%s", err, yaml)
	}
	t.Logf("rules:\n%s", yaml)
	policy := auth.Policy{Collections: cfg, Enforce: true}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st := stacktest.New(stacktest.Options{Engine: engine.Options{Collections: cfg, LogWindow: 1000}})
	eng := st.Eng
	load := func() *core.Document {
		st, err := eng.Load(ctx, propKey)
		if err != nil {
			t.Fatal(err)
		}
		if st.Doc == nil {
			return &core.Document{Key: propKey}
		}
		return st.Doc
	}
	opID := uint64(0)
	write := func() bool {
		opID++
		cur := load()
		op := core.Op{ClientID: "w", OpID: opID, Base: cur.Version, Ops: randomOps(rng)}
		switch {
		case cur.Version > 0 && !cur.Deleted && rng.IntN(12) == 0:
			op.Ops, op.Delete = nil, true
		case policyName == "manual" && cur.Version > 1 && rng.IntN(3) == 0:
			op.Base = cur.Version - 1 // concurrent with the last write: open conflicts
		}
		_, err := eng.Do(ctx, propKey, op)
		return err == nil
	}

	// The document may exist before the readers subscribe.
	if rng.IntN(2) == 0 {
		write()
	}
	type reader struct {
		id      auth.Identity
		sess    *session.Session
		out     *sender
		h       holder
		history []holder // readable states held
	}
	var readers []*reader
	// Every identity watches with deltas; one more watches in full mode
	// (a snapshot per change).
	for i, id := range append(propIdentities, propIdentities[rng.IntN(len(propIdentities))]) {
		full := i == len(propIdentities)
		s, out := propSession(t, ctx, st, policy, id, fmt.Sprintf("r%d", i))
		r := &reader{id: id, sess: s, out: out}
		readers = append(readers, r)
		if !s.Receive(ctx, protocol.Message{T: protocol.TSub, Doc: propKey.String(), Full: full}) {
			t.Fatal("session ended")
		}
		for {
			m := nextMsg(t, out)
			if m.T == protocol.TSynced {
				break
			}
			r.h.apply(t, m)
		}
		r.h.want(t, policy, id, load(), "subscribe")
		if !r.h.denied && r.h.v > 0 {
			r.history = append(r.history, r.h.clone())
		}
	}

	// Lock-step changes: after each, every reader that could read the
	// document before or after it gets exactly one message for it.
	for step := range 30 {
		if !write() {
			continue
		}
		d := load()
		for _, r := range readers {
			nowDenied := policy.DocView(r.id, propKey.Collection, d).Denied
			if d.Deleted {
				nowDenied = r.h.denied
			}
			if r.h.denied && nowDenied {
				continue
			}
			m := nextMsg(t, r.out)
			if m.V != d.Version {
				t.Fatalf("step %d: %s got %+v, want version %d", step, r.id.Subject, m, d.Version)
			}
			if !d.Deleted {
				neverHidden(t, m, policy.DocView(r.id, propKey.Collection, d))
			}
			r.h.apply(t, m)
			r.h.want(t, policy, r.id, d, fmt.Sprintf("step %d", step))
			if !r.h.denied && !r.h.deleted {
				r.history = append(r.history, r.h.clone())
			}
		}
	}

	// Catch-up: a new session resuming from any state the reader held ends
	// where the reader is.
	final := load()
	for i, r := range readers {
		if len(r.history) == 0 {
			continue
		}
		from := r.history[rng.IntN(len(r.history))]
		s, out := propSession(t, ctx, st, policy, r.id, fmt.Sprintf("c%d", i))
		if !s.Receive(ctx, protocol.Message{T: protocol.TSub, Doc: propKey.String(), Since: from.v}) {
			t.Fatal("session ended")
		}
		for {
			m := nextMsg(t, out)
			if m.T == protocol.TSynced {
				if m.V != final.Version {
					t.Fatalf("catch-up synced at %d, want %d", m.V, final.Version)
				}
				break
			}
			from.apply(t, m)
		}
		from.v = final.Version
		from.want(t, policy, r.id, final, fmt.Sprintf("catch-up from %d", from.v))
	}
}
