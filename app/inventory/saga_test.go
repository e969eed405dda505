package inventory

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/open-autoglm/autoglm/app/client"
	"github.com/open-autoglm/autoglm/app/events"
	"github.com/open-autoglm/autoglm/app/internal/clienttest"
	"github.com/open-autoglm/autoglm/app/internal/testutil"
	"github.com/open-autoglm/autoglm/app/protocol"
)

func orderJSON(customer string, items ...Item) string {
	b, _ := json.Marshal(map[string]any{"customer": customer, "items": items, "total": 10, "currency": "EUR", "status": "pending"})
	return string(b)
}

func setStock(t *testing.T, e *env, sku string, qty int) {
	t.Helper()
	if r := do(t, "PUT", fmt.Sprintf("http://127.0.0.1:%d/v1/stock/%s", e.InvPort, sku), fmt.Sprintf(`{"qty":%d}`, qty)); r.Status != 200 {
		t.Fatalf("set stock: %d %s", r.Status, r.Raw)
	}
}

func getStock(t *testing.T, e *env, sku string) float64 {
	t.Helper()
	r := do(t, "GET", fmt.Sprintf("http://127.0.0.1:%d/v1/stock/%s", e.InvPort, sku), "")
	return r.Body["qty"].(float64)
}

func orderData(t *testing.T, e *env, id string) map[string]any {
	t.Helper()
	r := do(t, "GET", e.URL()+"/v1/docs/orders/"+id, "")
	if r.Status != 200 {
		return nil
	}
	return r.Body["data"].(map[string]any)
}

// TestSaga runs the order/inventory saga with real sidecars: the sync
// service publishes OrderCreated through the outbox, the inventory reads
// the order through service invocation, reserves or refuses stock, and
// settles the order through the sync service's API, which a WebSocket
// client watching the order sees live.
func TestSaga(t *testing.T) {
	e := startEnv(t, envOptions{Inventory: true})
	setStock(t, e, "apple", 5)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	t.Run("Reserved", func(t *testing.T) {
		var mu sync.Mutex
		var seen []string
		c := clienttest.Dial(t, ctx, protocol.SyncURL(e.URL()), client.Options{ClientID: "watcher-" + e.id, Roles: []string{"clerk"},
			OnMessage: func(m protocol.Message, _ int) {
				if m.T == "delta" || m.T == "snap" || m.T == "synced" {
					mu.Lock()
					seen = append(seen, fmt.Sprintf("%s v%d", m.T, m.V))
					mu.Unlock()
				}
			}})
		doc := clienttest.Subscribe(t, ctx, c, "orders/o-ok", 0)
		start := time.Now()
		if r := do(t, "PUT", e.URL()+"/v1/docs/orders/o-ok", orderJSON("ann", Item{"apple", 2}), "X-Roles", "clerk"); r.Status != 201 {
			t.Fatalf("create order: %d %s", r.Status, r.Raw)
		}
		if err := doc.WaitVersion(ctx, 2); err != nil {
			t.Fatalf("the watcher never saw the order settle: %v", err)
		}
		settled := time.Since(start)
		d := doc.Data()
		if d["status"] != "reserved" || d["reservation"] != "rsv-o-ok" {
			t.Fatalf("order as the watcher sees it: %v", d)
		}
		if got := getStock(t, e, "apple"); got != 3 {
			t.Fatalf("stock %v, want 3", got)
		}
		mu.Lock()
		t.Logf("watcher saw %v; order created → reserved in %s", seen, settled.Round(time.Millisecond))
		mu.Unlock()
	})

	t.Run("Compensated", func(t *testing.T) {
		if r := do(t, "PUT", e.URL()+"/v1/docs/orders/o-short", orderJSON("bob", Item{"apple", 2}, Item{"pear", 1}), "X-Roles", "clerk"); r.Status != 201 {
			t.Fatalf("create order: %d %s", r.Status, r.Raw)
		}
		testutil.Eventually(t, 30*time.Second, "order rejected", func() bool {
			d := orderData(t, e, "o-short")
			return d != nil && d["status"] == "rejected"
		})
		d := orderData(t, e, "o-short")
		if !strings.Contains(d["reason"].(string), "insufficient stock: pear: wants 1, 0 in stock") {
			t.Fatalf("reason %q", d["reason"])
		}
		// All or nothing: the apples of the refused order are still there.
		if got := getStock(t, e, "apple"); got != 3 {
			t.Fatalf("stock %v, want 3", got)
		}
	})

	t.Run("CancelReleases", func(t *testing.T) {
		r := do(t, "GET", e.URL()+"/v1/docs/orders/o-ok", "")
		base := r.Body["version"].(float64)
		body := fmt.Sprintf(`{"base":%d,"ops":[{"op":"set","path":"status","value":"cancelled"}]}`, int(base))
		if r := do(t, "PATCH", e.URL()+"/v1/docs/orders/o-ok", body, "X-Roles", "clerk"); r.Status != 200 {
			t.Fatalf("cancel: %d %s", r.Status, r.Raw)
		}
		testutil.Eventually(t, 30*time.Second, "stock released", func() bool { return getStock(t, e, "apple") == 5 })
	})

	t.Run("NeverOversold", func(t *testing.T) {
		const orders, stock = 50, 10
		setStock(t, e, "last", stock)
		start := time.Now()
		var wg sync.WaitGroup
		for i := range orders {
			wg.Add(1)
			go func() {
				defer wg.Done()
				id := fmt.Sprintf("o-rush-%02d", i)
				if r := do(t, "PUT", e.URL()+"/v1/docs/orders/"+id, orderJSON("c", Item{"last", 1}), "X-Roles", "clerk"); r.Status != 201 {
					t.Errorf("create %s: %d %s", id, r.Status, r.Raw)
				}
			}()
		}
		wg.Wait()
		var reserved, rejected int
		testutil.Eventually(t, 60*time.Second, "every order settled", func() bool {
			reserved, rejected = 0, 0
			for i := range orders {
				switch orderData(t, e, fmt.Sprintf("o-rush-%02d", i))["status"] {
				case "reserved":
					reserved++
				case "rejected":
					rejected++
				}
			}
			return reserved+rejected == orders
		})
		left := getStock(t, e, "last")
		t.Logf("%d concurrent orders for the last %d items: %d reserved, %d rejected, %v left, all settled in %s",
			orders, stock, reserved, rejected, left, time.Since(start).Round(time.Millisecond))
		if reserved != stock || rejected != orders-stock || left != 0 {
			t.Fatalf("oversold or undersold: reserved %d, rejected %d, stock left %v", reserved, rejected, left)
		}
	})
}

// TestOutboxEvents checks the integration events of the outbox path: one
// CloudEvent per commit with the delta and the version, and none for
// writes the service refused.
func TestOutboxEvents(t *testing.T) {
	e := startEnv(t, envOptions{Sink: true})
	url := e.URL() + "/v1/docs/orders/o1"
	if r := do(t, "PUT", url, orderJSON("ann", Item{"apple", 1}), "X-Roles", "clerk"); r.Status != 201 {
		t.Fatalf("create: %d %s", r.Status, r.Raw)
	}
	if r := do(t, "PATCH", url, `{"base":1,"ops":[{"op":"set","path":"total","value":12}]}`, "X-Roles", "clerk"); r.Status != 200 {
		t.Fatalf("patch: %d %s", r.Status, r.Raw)
	}
	// Refused writes: a stale base (strict), a field rule, a workflow rule.
	for _, body := range []string{
		`{"base":1,"ops":[{"op":"set","path":"total","value":13}]}`,
		`{"base":2,"ops":[{"op":"set","path":"currency","value":"XXX"}]}`,
		`{"base":2,"ops":[{"op":"set","path":"status","value":"reserved"}]}`,
	} {
		if r := do(t, "PATCH", url, body, "X-Roles", "clerk"); r.Status/100 != 4 {
			t.Fatalf("refused write answered %d %s", r.Status, r.Raw)
		}
	}
	testutil.Eventually(t, 20*time.Second, "events of the two commits", func() bool { return len(e.Sink.of("orders/o1")) >= 2 })
	time.Sleep(3 * time.Second) // an event of a refused write would be here by now
	evs := e.Sink.of("orders/o1")
	if len(evs) != 2 {
		t.Fatalf("%d events, want 2: %v", len(evs), evs)
	}
	slices.SortFunc(evs, func(a, b map[string]any) int {
		return strings.Compare(a["docversion"].(string), b["docversion"].(string))
	})
	first, second := evs[0], evs[1]
	if first["type"] != events.TypeCreated || second["type"] != events.TypeChanged ||
		first["specversion"] != "1.0" || first["source"] != e.AutoglmID || first["datacontenttype"] != "application/json" ||
		first["collection"] != "orders" || first["docversion"] != "1" || second["docversion"] != "2" {
		t.Fatalf("attributes: %v\n%v", first, second)
	}
	var d events.Data
	b, _ := json.Marshal(second["data"])
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	if d.Version != 2 || d.Prev != 1 || len(d.Changes) != 1 || len(d.Changes[0].Ops) != 1 ||
		d.Changes[0].Ops[0].Path != "total" || string(d.Changes[0].Ops[0].Value) != "12" {
		t.Fatalf("data of the second event: %s", b)
	}
	if strings.Contains(string(b), "customer") {
		t.Fatalf("the event carries the document, not the delta: %s", b)
	}
	t.Logf("event: %v", second)
}

// TestOutboxSurvivesCrash kills the sync service's sidecar (SIGKILL) and
// stops the app right after a write was acknowledged — the event is
// committed with the document but not yet published — and restarts them:
// the event still arrives, once.
func TestOutboxSurvivesCrash(t *testing.T) {
	e := startEnv(t, envOptions{Sink: true})
	url := e.URL() + "/v1/docs/orders/crash"
	if r := do(t, "PUT", url, orderJSON("ann", Item{"apple", 1}), "X-Roles", "clerk"); r.Status != 201 {
		t.Fatalf("create: %d %s", r.Status, r.Raw)
	}
	e.stopService(true)
	killed := time.Now()
	time.Sleep(2 * time.Second) // time passes on purpose: an event published before the crash would be here
	if n := len(e.Sink.of("orders/crash")); n != 0 {
		t.Fatalf("the event was published before the sidecar died (%d); the test measured nothing", n)
	}
	e.startService()
	testutil.Eventually(t, 60*time.Second, "the event after the restart", func() bool { return len(e.Sink.of("orders/crash")) > 0 })
	arrived := time.Since(killed)
	time.Sleep(3 * time.Second) // time passes on purpose: a duplicate would be here by now
	evs := e.Sink.of("orders/crash")
	if len(evs) != 1 || evs[0]["docversion"] != "1" || evs[0]["type"] != events.TypeCreated {
		t.Fatalf("events after the crash: %v", evs)
	}
	// The document is intact too.
	if d := orderData(t, e, "crash"); d == nil || d["customer"] != "ann" {
		t.Fatalf("document after the crash: %v", d)
	}
	t.Logf("sidecar killed right after the commit; the event arrived %s later (after the restart and the relay's redelivery), once",
		arrived.Round(100*time.Millisecond))
}

// TestTaskPathEvents runs the same service on Redis state, where there is no
// outbox: events come from post-commit tasks, with deterministic ids.
func TestTaskPathEvents(t *testing.T) {
	e := startEnv(t, envOptions{Sink: true, RedisState: true})
	url := e.URL() + "/v1/docs/orders/r1"
	if r := do(t, "PUT", url, orderJSON("ann", Item{"apple", 1}), "X-Roles", "clerk"); r.Status != 201 {
		t.Fatalf("create: %d %s", r.Status, r.Raw)
	}
	for v := 1; v <= 3; v++ {
		body := fmt.Sprintf(`{"base":%d,"ops":[{"op":"set","path":"total","value":%d}]}`, v, 20+v)
		if r := do(t, "PATCH", url, body, "X-Roles", "clerk"); r.Status != 200 {
			t.Fatalf("patch: %d %s", r.Status, r.Raw)
		}
	}
	if r := do(t, "PATCH", url, `{"base":1,"ops":[{"op":"set","path":"total","value":1}]}`, "X-Roles", "clerk"); r.Status != 409 {
		t.Fatalf("stale write: %d", r.Status)
	}
	testutil.Eventually(t, 20*time.Second, "events up to version 4", func() bool {
		for _, ev := range e.Sink.of("orders/r1") {
			if ev["docversion"] == "4" {
				return true
			}
		}
		return false
	})
	time.Sleep(time.Second) // time passes on purpose: a duplicate would be here by now
	versions := map[int64]int{}
	for _, ev := range e.Sink.of("orders/r1") {
		if id := ev["id"].(string); !strings.HasPrefix(id, "orders/r1@") || ev["source"] != e.AutoglmID {
			t.Fatalf("event %v", ev)
		}
		var d events.Data
		b, _ := json.Marshal(ev["data"])
		_ = json.Unmarshal(b, &d)
		for _, c := range d.Changes {
			versions[c.Version]++
		}
	}
	for v := int64(1); v <= 4; v++ {
		if versions[v] == 0 {
			t.Fatalf("version %d never published: %v", v, versions)
		}
	}
	if len(versions) != 4 {
		t.Fatalf("versions published %v (a refused write must not publish)", versions)
	}
	t.Logf("versions published (count): %v", versions)
}
