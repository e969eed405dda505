package inventory

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path"
	"reflect"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/events"
	"github.com/open-autoglm/autoglm/app/inmem"
	"github.com/open-autoglm/autoglm/app/kv"
	"github.com/open-autoglm/autoglm/app/merge"
)

// TestOnMemory runs the inventory on the in-memory adapter of the kv port,
// with a stand-in for the sync service's order reads (service invocation
// on the sidecar's HTTP port). It pins what the Dapr adapter carries to the
// store and the broker: the keys, the stored JSON and the published
// outcomes with their CloudEvent type and id.
func TestOnMemory(t *testing.T) {
	st := inmem.NewState()
	m := newMemory(t, st)
	serve, orderEvent, stored := m.serve, m.orderEvent, m.stored
	published := func(typ, id, body string) kv.Message {
		return kv.Message{Pubsub: "events", Topic: "inventory-events", Body: []byte(body), ContentType: "application/json",
			Metadata: map[string]string{"cloudevent.type": typ, "cloudevent.id": typ + ":" + id}}
	}

	serve("PUT", "/v1/stock/apple", `{"qty":5}`)
	stored("stock:apple", `{"qty":5}`)

	orderEvent(events.TypeCreated, "o1")
	stored("stock:apple", `{"qty":3}`)
	reserved := `{"status":"reserved","reservation":"rsv-o1","items":[{"sku":"apple","qty":2}]}`
	stored("order:o1", reserved)
	// A redelivered event publishes the decision again and takes no stock.
	orderEvent(events.TypeCreated, "o1")
	stored("stock:apple", `{"qty":3}`)

	m.orders["o2"] = `{"version":1,"data":{"items":[{"sku":"apple","qty":4}],"status":"pending"}}`
	orderEvent(events.TypeCreated, "o2")
	stored("stock:apple", `{"qty":3}`)
	stored("order:o2", `{"status":"rejected","reason":"insufficient stock: apple: wants 4, 3 in stock"}`)

	orderEvent(events.TypeChanged, "o1", merge.FieldOp{Op: merge.KindSet, Path: "status", Value: json.RawMessage(`"cancelled"`)})
	stored("stock:apple", `{"qty":5}`)
	stored("order:o1", strings.Replace(reserved, "reserved", "released", 1))
	if got := serve("GET", "/v1/stock/apple", ""); got != `{"qty":5,"sku":"apple"}` {
		t.Fatalf("GET stock: %s", got)
	}

	want := []kv.Message{
		published(TypeStockReserved, "o1", `{"order":"o1","reservation":"rsv-o1","items":[{"sku":"apple","qty":2}]}`),
		published(TypeStockReserved, "o1", `{"order":"o1","reservation":"rsv-o1","items":[{"sku":"apple","qty":2}]}`),
		published(TypeStockReservationFailed, "o2", `{"order":"o2","reason":"insufficient stock: apple: wants 4, 3 in stock"}`),
		published(TypeStockReleased, "o1", `{"order":"o1","reservation":"rsv-o1","items":[{"sku":"apple","qty":2}]}`),
	}
	if got := st.Messages(); !reflect.DeepEqual(got, want) {
		t.Fatalf("published:\n%+v\nwant\n%+v", got, want)
	}
}

// racing is the in-memory state with a competing write slipped in before
// the next transaction.
type racing struct {
	*inmem.State
	before func()
}

func (r *racing) Transact(ctx context.Context, writes []kv.Write) error {
	if f := r.before; f != nil {
		r.before = nil
		f()
	}
	return r.State.Transact(ctx, writes)
}

// TestOnMemoryLostRace: stock taken between the inventory's read and its
// transaction makes the transaction lose the race, and the order is decided
// again on the stock as it now is.
func TestOnMemoryLostRace(t *testing.T) {
	st := &racing{State: inmem.NewState()}
	m := newMemory(t, st)
	m.serve("PUT", "/v1/stock/apple", `{"qty":5}`)
	st.before = func() {
		if err := st.Set(context.Background(), "stock:apple", []byte(`{"qty":1}`), 0); err != nil {
			t.Error(err)
		}
	}
	m.orderEvent(events.TypeCreated, "o1")
	m.stored("stock:apple", `{"qty":1}`)
	m.stored("order:o1", `{"status":"rejected","reason":"insufficient stock: apple: wants 2, 1 in stock"}`)
	if msgs := st.Messages(); len(msgs) != 1 || msgs[0].Metadata["cloudevent.type"] != TypeStockReservationFailed {
		t.Fatalf("published: %+v", msgs)
	}
}

// memory is the inventory on an in-memory state, with a stand-in for the
// sync service's order reads (service invocation on the sidecar's HTTP
// port) that answers from orders. Order o1 wants 2 apples.
type memory struct {
	t      *testing.T
	st     kv.Records
	h      http.Handler
	orders map[string]string
}

func newMemory(t *testing.T, st State) *memory {
	m := &memory{t: t, st: st, orders: map[string]string{
		"o1": `{"version":1,"data":{"items":[{"sku":"apple","qty":2}],"status":"pending"}}`,
	}}
	sidecar := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o, ok := m.orders[path.Base(r.URL.Path)]
		if r.Method != http.MethodGet || !strings.HasPrefix(r.URL.Path, "/v1.0/invoke/autoglm/method/v1/docs/orders/") || !ok {
			http.NotFound(w, r)
			return
		}
		_, _ = io.WriteString(w, o)
	}))
	t.Cleanup(sidecar.Close)
	log := logrus.New()
	log.SetOutput(io.Discard)
	m.h = New(Config{DaprHTTPPort: sidecar.Listener.Addr().(*net.TCPAddr).Port, Pubsub: "events",
		OrdersTopic: "doc-events", Topic: "inventory-events", OrdersApp: "autoglm"}, st, log).Handler()
	return m
}

func (m *memory) serve(method, target, body string) string {
	m.t.Helper()
	w := httptest.NewRecorder()
	m.h.ServeHTTP(w, httptest.NewRequest(method, target, strings.NewReader(body)))
	if w.Code != http.StatusOK {
		m.t.Fatalf("%s %s: %d %s", method, target, w.Code, w.Body)
	}
	return strings.TrimSpace(w.Body.String())
}

// orderEvent delivers an integration event of the orders collection.
func (m *memory) orderEvent(typ, id string, ops ...merge.FieldOp) {
	m.t.Helper()
	d := events.Data{Doc: "orders/" + id, Collection: "orders", ID: id, Version: 1,
		Changes: []core.Change{{Doc: "orders/" + id, Version: 1, Ops: ops}}}
	b, _ := json.Marshal(map[string]any{"id": "e-" + id, "type": typ, "data": d})
	if got := m.serve("POST", "/events/orders", string(b)); got != `{"status":"SUCCESS"}` {
		m.t.Fatalf("order event %s %s: %s", typ, id, got)
	}
}

// stored fails unless the record at key is want.
func (m *memory) stored(key, want string) {
	m.t.Helper()
	it, err := m.st.Get(context.Background(), key)
	if err != nil || string(it.Value) != want {
		m.t.Fatalf("%s = %s (%v), want %s", key, it.Value, err, want)
	}
}
