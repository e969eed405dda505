package httpapi_test

// Read rules on every path: row rules (owner, team claim, roles) and
// readable_by fields, over REST and every sync transport, under every
// conflict policy; access that changes with the data (ownership and team
// changes) and with the token (refresh) while subscribed. The HTTP API runs
// in-process over the in-memory store.

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/merge"
	"github.com/open-autoglm/autoglm/app/protocol"
)

var policies = []string{"lww", "crdt", "strict", "manual"}

// readCollections: for each policy, "p-<policy>" documents are readable by
// their owner, their team and admins, with secret readable by the owner and
// admins; "t-<policy>" documents by their team and admins, with budget
// readable by admins.
func readCollections() string {
	var b strings.Builder
	b.WriteString("collections:\n")
	for _, p := range policies {
		fmt.Fprintf(&b, `  p-%[1]s:
    policy: %[1]s
    owner_field: owner
    read_rules: {owner: true, claims: {team: team}, roles: [admin]}
    fields:
      secret: {readable_by: [owner, admin]}
  t-%[1]s:
    policy: %[1]s
    read_rules: {claims: {team: team}, roles: [admin]}
    fields:
      budget: {readable_by: [admin]}
`, p)
	}
	return b.String()
}

// subscribe subscribes c to doc from since and returns what came before
// synced, checking synced's version.
func subscribe(t *testing.T, c syncConn, doc string, since, synced int64) []protocol.Message {
	t.Helper()
	c.send(t, protocol.Message{T: protocol.TSub, Doc: doc, Since: since})
	var got []protocol.Message
	for {
		m := c.next(t)
		if m.T == protocol.TSynced {
			if m.V != synced {
				t.Fatalf("synced at %d, want %d (got %+v)", m.V, synced, got)
			}
			return got
		}
		got = append(got, m)
	}
}

func wantData(t *testing.T, what string, got map[string]any, want string) {
	t.Helper()
	var w map[string]any
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(got)
	var g map[string]any
	_ = json.Unmarshal(b, &g)
	if !reflect.DeepEqual(g, w) {
		t.Fatalf("%s: data %s, want %s", what, b, want)
	}
}

func wantNotReadable(t *testing.T, m protocol.Message, v int64) {
	t.Helper()
	if m.T != protocol.TError || m.Code != core.CodeNotReadable || m.V != v {
		t.Fatalf("got %+v, want error not_readable at version %d", m, v)
	}
}

func wantOps(t *testing.T, m protocol.Message, v int64, want string) {
	t.Helper()
	wantMsg(t, m, protocol.TDelta, v)
	b, _ := json.Marshal(m.Ops)
	if string(b) != want {
		t.Fatalf("delta %d ops %s, want %s", v, b, want)
	}
}

func rest(t *testing.T, method, url, token, body string) httpResult {
	t.Helper()
	var b []byte
	ctype := ""
	if body != "" {
		b, ctype = []byte(body), "application/json"
	}
	return call(t, method, url, ctype, b, bearer(token)...)
}

func wantStatus(t *testing.T, r httpResult, status int) {
	t.Helper()
	if r.status != status {
		t.Fatalf("got %d %s, want %d", r.status, r.body, status)
	}
}

// noHidden fails when b holds the hidden value.
func noHidden(t *testing.T, what string, b []byte, hidden ...string) {
	t.Helper()
	for _, h := range hidden {
		if strings.Contains(string(b), h) {
			t.Fatalf("%s shows %q: %s", what, h, b)
		}
	}
}

// notPresence reads c's next message that is not presence. Cat, who could
// read the document from the version where ann could not, may or may not
// hear ann's presence withdrawn: the two readers' sessions take the change
// in either order.
func notPresence(t *testing.T, c syncConn) protocol.Message {
	t.Helper()
	for {
		if m := c.next(t); m.T != protocol.TPresence {
			return m
		}
	}
}

// reach applies what c receives to data (at version v) until version
// target, and returns the data.
func reach(t *testing.T, c syncConn, data map[string]any, v, target int64) map[string]any {
	t.Helper()
	for v < target {
		m := c.next(t)
		switch m.T {
		case protocol.TSnap:
			data, v = m.Data, m.V
		case protocol.TPresence:
			// Presence is not the document's data; it comes and goes with
			// the other readers' access, in no fixed order with changes.
		case protocol.TDelta:
			if m.V != v+1 {
				t.Fatalf("delta %d after %d", m.V, v)
			}
			if err := merge.ApplyPlain(data, m.Ops); err != nil {
				t.Fatal(err)
			}
			v = m.V
		default:
			t.Fatalf("unexpected %+v", m)
		}
	}
	return data
}

// listed lists coll as token and returns the items' data by id.
func listed(t *testing.T, base, coll, token string) map[string]map[string]any {
	t.Helper()
	r := rest(t, "GET", base+"/v1/docs/"+coll+"?limit=500", token, "")
	wantStatus(t, r, 200)
	var body struct {
		Items []struct {
			ID   string
			Data map[string]any
		}
	}
	if err := json.Unmarshal(r.body, &body); err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string]any{}
	for _, it := range body.Items {
		out[it.ID] = it.Data
	}
	return out
}

func TestReadRules(t *testing.T) {
	t.Parallel()
	base := startAuthedWith(t, readCollections())
	red, blue := map[string]string{"team": "red"}, map[string]string{"team": "blue"}
	ann := idTokenWith(t, "ann", red, "user")
	bob := idTokenWith(t, "bob", red, "user")
	cat := idTokenWith(t, "cat", blue, "user")
	for _, policy := range policies {
		for _, tr := range syncTransports {
			t.Run(policy+"/"+tr.name, func(t *testing.T) {
				doc := "p-" + policy + "/" + uuid.NewString()[:8]
				url := base + "/v1/docs/" + doc
				wantStatus(t, rest(t, "PUT", url, ann, `{"owner":"ann","team":"red","secret":"s-one","name":"n1"}`), 201)

				// A team member reads the document without its secret; another
				// team is told it may not read it, and the subscription stays.
				b, _ := tr.open(t, base, bob, "b")
				got := subscribe(t, b, doc, 0, 1)
				if len(got) != 1 || got[0].T != protocol.TSnap {
					t.Fatalf("bob subscribing: %+v", got)
				}
				wantData(t, "bob's snapshot", got[0].Data, `{"owner":"ann","team":"red","name":"n1"}`)
				c, _ := tr.open(t, base, cat, "c")
				got = subscribe(t, c, doc, 0, 1)
				if len(got) != 1 {
					t.Fatalf("cat subscribing: %+v", got)
				}
				wantNotReadable(t, got[0], 1)
				a, _ := syncTransports[0].open(t, base, ann, "a")
				if got := subscribe(t, a, doc, 0, 1); len(got) != 1 || got[0].Data["secret"] != "s-one" {
					t.Fatalf("the owner subscribing: %+v", got)
				}

				// A change of a hidden field only still advances the reader's
				// version, with no ops.
				wantStatus(t, rest(t, "PATCH", url, ann, `{"base":1,"ops":[{"op":"set","path":"secret","value":"s-two"}]}`), 200)
				wantOps(t, b.next(t), 2, `[]`)
				want(t, a, protocol.TDelta, 2)
				wantStatus(t, rest(t, "PATCH", url, ann, `{"base":2,"ops":[{"op":"set","path":"name","value":"n2"},{"op":"set","path":"secret","value":"s-three"}]}`), 200)
				wantOps(t, b.next(t), 3, `[{"op":"set","path":"name","value":"n2"}]`)
				want(t, a, protocol.TDelta, 3)

				// Presence is shown through the view too.
				a.send(t, protocol.Message{T: protocol.TPresence, Doc: doc, Data: map[string]any{"secret": "s-typing", "cursor": 3}})
				p := want(t, b, protocol.TPresence, 0)
				wantData(t, "presence", p.Data, `{"cursor":3}`)

				// REST: GET, list and changes show the same view.
				g := rest(t, "GET", url, bob, "")
				wantStatus(t, g, 200)
				noHidden(t, "GET", g.body, "secret", "s-three")
				wantErr(t, rest(t, "GET", url, cat, ""), 403, "not_readable")
				ch := rest(t, "GET", url+"/changes?since=1", bob, "")
				wantStatus(t, ch, 200)
				noHidden(t, "changes", ch.body, "s-two", "s-three")
				if !strings.Contains(string(ch.body), `"n2"`) {
					t.Fatalf("changes lost a visible op: %s", ch.body)
				}
				ch = rest(t, "GET", url+"/changes?since=0", bob, "")
				noHidden(t, "changes from 0 (a snapshot)", ch.body, "s-three")
				id := strings.Split(doc, "/")[1]
				wantData(t, "bob's list item", listed(t, base, "p-"+policy, bob)[id], `{"owner":"ann","team":"red","name":"n2"}`)
				if item, ok := listed(t, base, "p-"+policy, cat)[id]; ok {
					t.Fatalf("list shows another team's document: %v", item)
				}

				// Catch-up from a version: the same deltas, the same view.
				b2, _ := tr.open(t, base, bob, "b2")
				got = subscribe(t, b2, doc, 1, 3)
				if len(got) != 2 {
					t.Fatalf("catch-up: %+v", got)
				}
				wantOps(t, got[0], 2, `[]`)
				wantOps(t, got[1], 3, `[{"op":"set","path":"name","value":"n2"}]`)
				p = want(t, b2, protocol.TPresence, 0) // the presence already there
				wantData(t, "presence on subscribing", p.Data, `{"cursor":3}`)

				// Ownership changes: the owner gives up the document (it stays
				// readable to the team, without the secret); bob takes it and
				// sees the secret from then on.
				wantStatus(t, rest(t, "PATCH", url, ann, `{"base":3,"ops":[{"op":"unset","path":"owner"}]}`), 200)
				wantOps(t, b.next(t), 4, `[{"op":"unset","path":"owner"}]`)
				s := want(t, a, protocol.TSnap, 4)
				wantData(t, "ann's snapshot once not the owner", s.Data, `{"team":"red","name":"n2"}`)
				wantStatus(t, rest(t, "PATCH", url, bob, `{"base":4,"ops":[{"op":"set","path":"owner","value":"bob"}]}`), 200)
				s = want(t, b, protocol.TSnap, 5)
				wantData(t, "bob's snapshot as the owner", s.Data, `{"owner":"bob","team":"red","name":"n2","secret":"s-three"}`)
				wantOps(t, a.next(t), 5, `[{"op":"set","path":"owner","value":"bob"}]`)

				// Team change: the old team is told it may no longer read it,
				// the new team gets a snapshot, the owner goes on with deltas.
				wantStatus(t, rest(t, "PATCH", url, bob, `{"base":5,"ops":[{"op":"set","path":"team","value":"blue"}]}`), 200)
				wantNotReadable(t, a.next(t), 6)
				s = want(t, c, protocol.TSnap, 6) // cat's first message since not_readable
				wantData(t, "cat's snapshot", s.Data, `{"owner":"bob","team":"blue","name":"n2"}`)
				// Ann, who may no longer read it, is no longer present on it:
				// bob hears her presence withdrawn, in either order with the
				// change, and she may not set it again.
				for gone, changed := false, false; !gone || !changed; {
					switch m := b.next(t); {
					case m.T == protocol.TPresence && !gone:
						if !m.Del || m.By != "ann" {
							t.Fatalf("presence after ann lost access: %+v", m)
						}
						gone = true
					case !changed:
						wantOps(t, m, 6, `[{"op":"set","path":"team","value":"blue"}]`)
						changed = true
					default:
						t.Fatalf("unexpected %+v", m)
					}
				}
				a.send(t, protocol.Message{T: protocol.TPresence, Doc: doc, Data: map[string]any{"cursor": 4}})
				if m := a.next(t); m.T != protocol.TError || m.Code != core.CodeNotReadable {
					t.Fatalf("presence without read access: %+v", m)
				}
				// The second connection, not read meanwhile, may get a
				// snapshot that covers several versions; it ends in the same
				// state either way.
				wantData(t, "bob's second connection", reach(t, b2, map[string]any{"owner": "ann", "team": "red", "name": "n2"}, 3, 6),
					`{"owner":"bob","team":"blue","name":"n2","secret":"s-three"}`)

				// Nothing more reaches the reader that lost access, until it may
				// read again.
				wantStatus(t, rest(t, "PATCH", url, bob, `{"base":6,"ops":[{"op":"set","path":"name","value":"n-hidden"}]}`), 200)
				wantStatus(t, rest(t, "PATCH", url, bob, `{"base":7,"ops":[{"op":"set","path":"team","value":"red"}]}`), 200)
				s = want(t, a, protocol.TSnap, 8)
				wantData(t, "ann's snapshot when readable again", s.Data, `{"owner":"bob","team":"red","name":"n-hidden"}`)
				wantOps(t, notPresence(t, c), 7, `[{"op":"set","path":"name","value":"n-hidden"}]`)
				wantNotReadable(t, notPresence(t, c), 8)
			})
		}
	}
}

// A token refresh re-evaluates the read rules of every watched document: a
// lost role sends not_readable, a regained one a snapshot, and a changed
// field view a snapshot of the new view.
func TestReadRulesTokenRefresh(t *testing.T) {
	t.Parallel()
	base := startAuthedWith(t, readCollections())
	for _, policy := range policies {
		for _, tr := range syncTransports {
			t.Run(policy+"/"+tr.name, func(t *testing.T) {
				doc := "p-" + policy + "/" + uuid.NewString()[:8]
				wantStatus(t, rest(t, "PUT", base+"/v1/docs/"+doc, idToken(t, "ann", "user"), `{"owner":"ann","team":"red","secret":"s1"}`), 201)
				c, _ := tr.open(t, base, idToken(t, "root", "admin"), "r")
				if got := subscribe(t, c, doc, 0, 1); len(got) != 1 || got[0].Data["secret"] != "s1" {
					t.Fatalf("admin subscribing: %+v", got)
				}
				c.send(t, protocol.Message{T: protocol.TAuth, Token: idToken(t, "root", "user")})
				wantNotReadable(t, c.next(t), 1)
				want(t, c, protocol.TAuth, 0)
				c.send(t, protocol.Message{T: protocol.TAuth, Token: idTokenWith(t, "root", map[string]string{"team": "red"}, "user")})
				s := want(t, c, protocol.TSnap, 1)
				wantData(t, "snapshot for a team member", s.Data, `{"owner":"ann","team":"red"}`)
				want(t, c, protocol.TAuth, 0)
				c.send(t, protocol.Message{T: protocol.TAuth, Token: idToken(t, "root", "admin")})
				s = want(t, c, protocol.TSnap, 1)
				wantData(t, "snapshot for an admin", s.Data, `{"owner":"ann","team":"red","secret":"s1"}`)
				want(t, c, protocol.TAuth, 0)
			})
		}
	}
}

// A refresh re-evaluates a watched document that does not exist yet too:
// the owner rule admits nobody to it, so a reader admitted by its role
// alone hears not_readable when the role goes, and the document's creation
// by a team member's write then reaches it as a snapshot.
func TestReadRulesRefreshBeforeCreation(t *testing.T) {
	t.Parallel()
	base := startAuthedWith(t, readCollections())
	doc := "p-lww/" + uuid.NewString()[:8]
	c, _ := syncTransports[0].open(t, base, idToken(t, "root", "admin"), "r")
	if got := subscribe(t, c, doc, 0, 0); len(got) != 0 {
		t.Fatalf("subscribing to a new document: %+v", got)
	}
	c.send(t, protocol.Message{T: protocol.TAuth, Token: idTokenWith(t, "root", map[string]string{"team": "red"}, "user")})
	wantNotReadable(t, c.next(t), 0)
	want(t, c, protocol.TAuth, 0)
	wantStatus(t, rest(t, "PUT", base+"/v1/docs/"+doc, idToken(t, "ann", "user"), `{"owner":"ann","team":"red","secret":"s1"}`), 201)
	s := want(t, c, protocol.TSnap, 1)
	wantData(t, "snapshot on creation", s.Data, `{"owner":"ann","team":"red"}`)
}

// A writer that may not read a field gets no value of it back: not in a
// conflict's details, not in its ack's effective ops, not in REST refusals.
func TestReadRulesWrites(t *testing.T) {
	t.Parallel()
	base := startAuthedWith(t, readCollections())
	admin := idToken(t, "root", "admin")
	bob := idTokenWith(t, "bob", map[string]string{"team": "red"}, "user")
	for _, policy := range policies {
		for _, tr := range syncTransports {
			t.Run(policy+"/"+tr.name, func(t *testing.T) {
				doc := "t-" + policy + "/" + uuid.NewString()[:8]
				url := base + "/v1/docs/" + doc
				wantStatus(t, rest(t, "PUT", url, admin, `{"team":"red","budget":987654,"name":"n1"}`), 201)
				wantStatus(t, rest(t, "PATCH", url, admin, `{"base":1,"ops":[{"op":"set","path":"budget","value":876543},{"op":"set","path":"name","value":"n2"}]}`), 200)

				c, _ := tr.open(t, base, bob, "w")
				if got := subscribe(t, c, doc, 0, 2); len(got) != 1 {
					t.Fatalf("subscribing: %+v", got)
				}
				// A write based on version 1 that touches the hidden field.
				op := protocol.Message{T: protocol.TOp, Doc: doc, Op: 1, Base: 1, Ops: []merge.FieldOp{
					{Op: merge.KindSet, Path: "budget", Value: json.RawMessage(`5`)},
					{Op: merge.KindSet, Path: "name", Value: json.RawMessage(`"mine"`)}}}
				c.send(t, op)
				m := c.next(t)
				b, _ := json.Marshal(m)
				noHidden(t, "the answer to a stale write", b, "987654", "876543", `"budget"`)
				switch policy {
				case "strict":
					if m.T != protocol.TReject || m.Code != core.CodeConflict {
						t.Fatalf("got %s, want a conflict", b)
					}
					d, _ := json.Marshal(m.Details)
					if want := `{"base":1,"current":2,"theirs":{"name":"n2"},"yours":[{"op":"set","path":"name","value":"mine"}]}`; string(d) != want {
						t.Fatalf("conflict details %s, want %s", d, want)
					}
				default:
					wantMsg(t, m, protocol.TAck, 3)
				}
				// REST refusals and answers hide it too.
				r := rest(t, "PATCH", url, bob, `{"base":1,"ops":[{"op":"set","path":"budget","value":1},{"op":"set","path":"name","value":"x"}]}`)
				noHidden(t, "a REST write's answer", r.body, "987654", "876543")
				if policy == "strict" {
					wantErr(t, r, 409, "conflict")
				}
				g := rest(t, "GET", url, bob, "")
				noHidden(t, "GET", g.body, "987654", "876543", "budget")
				if g := rest(t, "GET", url, admin, ""); !strings.Contains(string(g.body), `"budget"`) {
					t.Fatalf("an admin misses the budget: %s", g.body)
				}
			})
		}
	}
}
