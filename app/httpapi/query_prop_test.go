package httpapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/open-autoglm/autoglm/app/internal/testutil"
	"github.com/open-autoglm/autoglm/app/merge"
	"github.com/open-autoglm/autoglm/app/protocol"
	"github.com/open-autoglm/autoglm/app/query"
)

// pumpWS opens a JSON WebSocket session as token and returns a channel of
// every message after welcome (pings answered).
func pumpWS(t *testing.T, base, token string) (send func(protocol.Message), msgs <-chan protocol.Message) {
	t.Helper()
	ctx, c, send := dialJSON(t, base)
	ch := make(chan protocol.Message, 1024)
	go func() {
		defer close(ch)
		for {
			_, b, err := c.Read(ctx)
			if err != nil {
				return
			}
			m, err := protocol.Decode(b)
			if err != nil {
				return
			}
			if m.T == protocol.TPing {
				send(protocol.Message{T: protocol.TPong, TS: m.TS})
				continue
			}
			ch <- m
		}
	}()
	send(protocol.Message{T: protocol.THello, Client: "prop", Token: token, Proto: protocol.Version})
	if m := <-ch; m.T != protocol.TWelcome {
		t.Fatalf("hello answered with %+v", m)
	}
	return send, ch
}

// dialJSON opens a JSON WebSocket to base's sync endpoint (closed when
// the test ends) and returns a context that lives as long, the connection
// and a send function.
func dialJSON(t *testing.T, base string) (context.Context, *websocket.Conn, func(protocol.Message)) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	c, _, err := websocket.Dial(ctx, protocol.SyncURL(base), &websocket.DialOptions{Subprotocols: []string{protocol.SubprotocolJSON}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.CloseNow() })
	c.SetReadLimit(1 << 20)
	return ctx, c, func(m protocol.Message) {
		b, _ := protocol.Encode(m)
		_ = c.Write(ctx, websocket.MessageText, b)
	}
}

// queryClient is what a client holds for one live query after applying
// its messages.
type queryClient struct {
	docs   map[string]query.Item
	vers   map[string]int64
	synced bool
}

func (qc *queryClient) apply(t *testing.T, m protocol.Message) {
	t.Helper()
	id := m.Doc[strings.IndexByte(m.Doc, '/')+1:]
	switch m.T {
	case protocol.TSnap, protocol.TAdded:
		if m.T == protocol.TAdded {
			if _, ok := qc.docs[id]; ok {
				t.Fatalf("added %s already held", id)
			}
		}
		data := m.Data
		if data == nil {
			data = map[string]any{}
		}
		qc.docs[id], qc.vers[id] = query.Item{ID: id, Data: data}, m.V
	case protocol.TDelta:
		held, ok := qc.docs[id]
		if !ok || m.V != qc.vers[id]+1 {
			t.Fatalf("delta %s v%d on v%d (held %v)", id, m.V, qc.vers[id], ok)
		}
		if m.New {
			held.Data = map[string]any{}
		}
		if err := merge.ApplyPlain(held.Data, m.Ops); err != nil {
			t.Fatal(err)
		}
		qc.docs[id], qc.vers[id] = held, m.V
	case protocol.TRemoved:
		if _, ok := qc.docs[id]; !ok {
			t.Fatalf("removed %s not held", id)
		}
		delete(qc.docs, id)
		delete(qc.vers, id)
	case protocol.TSynced:
		qc.synced = true
	default:
		t.Fatalf("unexpected %+v", m)
	}
}

func (qc *queryClient) list(q query.Query) []query.Item {
	items := slices.Collect(maps.Values(qc.docs))
	slices.SortFunc(items, q.Compare)
	return items
}

// Random documents, live queries and change sequences over the wire, with
// read rules: after applying every message, the client's result list (ids,
// order and data) equals running the query on the server's documents as
// the reader may see them.
func TestLiveQueryWireProperty(t *testing.T) {
	t.Parallel()
	// make test-unit runs three seeds; make test runs all twelve.
	testutil.Seeded(t, 12, 3, 99, func(t *testing.T, r *rand.Rand) {
		base := startAuthedWith(t, readCollections())
		admin := idToken(t, "root", "admin")
		red := idTokenWith(t, "alice", map[string]string{"team": "red"})
		ids := []string{"d0", "d1", "d2", "d3", "d4", "d5", "d6", "d7"}
		randData := func() map[string]any {
			d := map[string]any{"team": []string{"red", "blue"}[r.IntN(2)]}
			if r.IntN(4) > 0 {
				d["status"] = []string{"open", "closed"}[r.IntN(2)]
			}
			if r.IntN(4) > 0 {
				d["rank"] = float64(r.IntN(5))
			}
			if r.IntN(2) == 0 {
				d["budget"] = float64(r.IntN(4))
			}
			return d
		}
		exists := map[string]bool{}
		write := func() {
			id := ids[r.IntN(len(ids))]
			switch k := r.IntN(5); {
			case k == 0 && exists[id]:
				if res := rest(t, "DELETE", base+"/v1/docs/t-lww/"+id, admin, ""); res.status != 200 {
					t.Fatalf("delete: %d %s", res.status, res.body)
				}
				exists[id] = false
			case k <= 2 || !exists[id]:
				b, _ := json.Marshal(randData())
				put(t, base, admin, "t-lww/"+id, string(b))
				exists[id] = true
			default:
				field := []string{"status", "rank", "budget", "team"}[r.IntN(4)]
				patchSet(t, base, admin, "t-lww/"+id, field, randData()[field])
			}
		}
		for range 5 {
			write()
		}
		wheres := []string{`["status","==","open"]`, `["rank",">=",2]`, `["budget",">",0]`, `["team","in",["red","blue"]]`, `["status","!=","closed"]`}
		orders := []string{``, `["rank","asc"]`, `["rank","desc"]`, `["status","asc"]`}
		send, msgs := pumpWS(t, base, red)
		queries := map[string]query.Query{}
		clients := map[string]*queryClient{}
		for i := range 3 {
			var w []string
			for range r.IntN(3) {
				w = append(w, wheres[r.IntN(len(wheres))])
			}
			body := fmt.Sprintf(`{"where":[%s],"order_by":[%s],"limit":%d}`, strings.Join(w, ","), orders[r.IntN(len(orders))], r.IntN(4))
			q, err := query.Parse([]byte(body))
			if err != nil {
				t.Fatal(err)
			}
			qid := fmt.Sprint("q", i)
			queries[qid], clients[qid] = q, &queryClient{docs: map[string]query.Item{}, vers: map[string]int64{}}
			send(protocol.Message{T: protocol.TSub, Coll: "t-lww", QID: qid, Query: json.RawMessage(body)})
		}
		for step := range 30 {
			write()
			if step%5 != 4 {
				continue
			}
			truth := map[string][]query.Item{}
			all := listed(t, base, "t-lww", admin)
			for qid, q := range queries {
				var items []query.Item
				for id, data := range all {
					if data["team"] != "red" || slices.Contains(q.Paths(), "budget") {
						continue // row rule, and a field alice may not read
					}
					shown := maps.Clone(data)
					delete(shown, "budget")
					items = append(items, query.Item{ID: id, Data: shown})
				}
				truth[qid], _ = q.Run(items)
			}
			deadline := time.After(5 * time.Second)
			for {
				same := true
				for qid, q := range queries {
					got := clients[qid].list(q)
					if !clients[qid].synced || !reflect.DeepEqual(got, truth[qid]) && !(len(got) == 0 && len(truth[qid]) == 0) {
						same = false
					}
				}
				if same {
					break
				}
				select {
				case m, ok := <-msgs:
					if !ok {
						t.Fatal("connection closed")
					}
					qc := clients[m.QID]
					if qc == nil {
						t.Fatalf("message without a known qid: %+v", m)
					}
					qc.apply(t, m)
				case <-deadline:
					for qid, q := range queries {
						b, _ := json.Marshal(q)
						t.Errorf("%s %s:\n got %v\nwant %v", qid, b, clients[qid].list(q), truth[qid])
					}
					t.Fatalf("step %d: results differ", step)
				}
			}
		}
	})
}
