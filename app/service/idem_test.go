package service_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/open-autoglm/autoglm/app/config"
	"github.com/open-autoglm/autoglm/app/internal/daprtest"
	"github.com/open-autoglm/autoglm/app/internal/testutil"
	"github.com/open-autoglm/autoglm/app/merge"
	"github.com/open-autoglm/autoglm/app/protocol"
)

// opsIn returns how often each op id of client appears in the document's
// op log (GET .../changes?since=0).
func opsIn(t testing.TB, docURL, client string) map[uint64]int {
	t.Helper()
	r := do(t, "GET", docURL+"/changes?since=0", "")
	var body struct {
		Changes []struct {
			By string `json:"by"`
			Op uint64 `json:"op"`
		} `json:"changes"`
		Snapshot map[string]any `json:"snapshot"`
	}
	if err := json.Unmarshal([]byte(r.Raw), &body); err != nil || r.Status != http.StatusOK || body.Snapshot != nil {
		t.Fatalf("changes since 0: %d %s %v", r.Status, r.Raw, err)
	}
	out := map[uint64]int{}
	for _, c := range body.Changes {
		if c.By == client {
			out[c.Op]++
		}
	}
	return out
}

// wsConn is a bare WebSocket client that answers heartbeats and sends ops
// with op ids of its choosing.
type wsConn struct{ *rawWS }

func (w wsConn) op(doc string, id uint64, base int64, ops string) {
	w.t.Helper()
	var fo []merge.FieldOp
	if err := json.Unmarshal([]byte(ops), &fo); err != nil {
		w.t.Fatal(err)
	}
	w.send(protocol.Message{T: protocol.TOp, Doc: doc, Op: id, Base: base, Ops: fo})
}

// answer reads until an ack or reject arrives, answering pings.
func (w wsConn) answer() protocol.Message {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		m, code := w.read(ctx)
		switch {
		case code != 0:
			w.t.Fatalf("no answer within 30s (close status %d)", code)
		case m.T == protocol.TPing:
			w.send(protocol.Message{T: protocol.TPong, TS: m.TS})
		case m.T == protocol.TAck || m.T == protocol.TReject:
			return m
		}
	}
}

// The audit's case, against a real replica and daprd: an op refused
// unavailable while daprd is down, a later op of the same client applied
// once it is back, then the retry of the first op: it is stored, not
// answered as a duplicate. Over REST and WebSocket.
func TestRetryAfterUnavailableIsStored(t *testing.T) {
	r := daprtest.Start(t, daprtest.Options{Config: func(c *config.Config) { c.LogWindow = 8 }})
	coll := "idem" + strings.ReplaceAll(uuid.NewString()[:8], "-", "")
	restDoc := r.URL() + "/v1/docs/" + coll + "/rest"
	wsDoc := coll + "/ws"
	wantStatus(t, do(t, "PUT", restDoc, `{"n":0}`), 201, "")
	wantStatus(t, do(t, "PUT", r.URL()+"/v1/docs/"+wsDoc, `{"n":0}`), 201, "")

	ws := wsConn{dialRaw(t, r.WSURL())}
	ws.send(protocol.Message{T: protocol.THello, Client: "ws-c"})
	ws.expect(protocol.TWelcome)
	ws.send(protocol.Message{T: protocol.TSub, Doc: wsDoc, Since: 1})
	ws.expect(protocol.TSynced)

	patch := func(id, body string) resp {
		return do(t, "PATCH", restDoc, body, "X-Client-ID", "rest-c", "X-Op-ID", id)
	}
	const inc1 = `{"ops":[{"op":"inc","path":"n","value":1}]}`

	r.StopSidecar()
	wantStatus(t, patch("1", inc1), http.StatusServiceUnavailable, "unavailable")
	ws.op(wsDoc, 1, 1, `[{"op":"inc","path":"n","value":1}]`)
	if m := ws.answer(); m.T != protocol.TReject || m.Code != "unavailable" || m.Op != 1 {
		t.Fatalf("ws op 1 without daprd: %+v", m)
	}
	r.StartSidecar()

	// A later op of the same client: retried with its own id until the
	// replica's connection to daprd is back.
	var later resp
	testutil.Eventually(t, 30*time.Second, "op 2 answered by a replica back on daprd", func() bool {
		later = patch("2", inc1)
		return later.Status != http.StatusServiceUnavailable
	})
	wantStatus(t, later, 200, "")
	if later.Body["version"] != 2.0 || later.Body["duplicate"] != nil {
		t.Fatalf("op 2: %s", later.Raw)
	}
	testutil.Eventually(t, 30*time.Second, "ws op 2 acknowledged", func() bool {
		ws.op(wsDoc, 2, 1, `[{"op":"inc","path":"n","value":1}]`)
		m := ws.answer()
		if m.T == protocol.TAck {
			if m.V != 2 || m.Dup {
				t.Fatalf("ws op 2: %+v", m)
			}
			return true
		}
		if m.Code != "unavailable" {
			t.Fatalf("ws op 2: %+v", m)
		}
		return false
	})

	t.Run("REST", func(t *testing.T) {
		retry := patch("1", inc1)
		wantStatus(t, retry, 200, "")
		if retry.Body["version"] != 3.0 || retry.Body["duplicate"] != nil {
			t.Fatalf("retry of op 1 answered %s, want it stored as version 3", retry.Raw)
		}
		dup := patch("1", ` {"ops":[{"path":"n","op":"inc","value":1.0}]}`)
		if dup.Status != 200 || dup.Body["version"] != 3.0 || dup.Body["duplicate"] != true {
			t.Fatalf("second retry of op 1: %s", dup.Raw)
		}
		wantStatus(t, patch("1", `{"ops":[{"op":"inc","path":"n","value":5}]}`), 422, "op_id_reused")
		wantStatus(t, do(t, "PUT", restDoc, `{"n":1}`, "X-Client-ID", "rest-c", "X-Op-ID", "2"), 422, "op_id_reused")
		if g := do(t, "GET", restDoc, ""); g.Body["version"] != 3.0 || g.Body["data"].(map[string]any)["n"] != 2.0 {
			t.Fatalf("document: %s", g.Raw)
		}
		if got := opsIn(t, restDoc, "rest-c"); got[1] != 1 || got[2] != 1 || len(got) != 2 {
			t.Fatalf("op ids in the log: %v", got)
		}
	})

	t.Run("WebSocket", func(t *testing.T) {
		ws.op(wsDoc, 1, 1, `[{"op":"inc","path":"n","value":1}]`)
		if m := ws.answer(); m.T != protocol.TAck || m.Dup || m.V != 3 {
			t.Fatalf("retry of op 1 answered %+v, want it stored as version 3", m)
		}
		ws.op(wsDoc, 1, 1, `[{"op":"inc","path":"n","value":1}]`)
		if m := ws.answer(); m.T != protocol.TAck || !m.Dup || m.V != 3 {
			t.Fatalf("second retry of op 1: %+v", m)
		}
		ws.op(wsDoc, 1, 1, `[{"op":"set","path":"n","value":9}]`)
		if m := ws.answer(); m.T != protocol.TReject || m.Code != "op_id_reused" {
			t.Fatalf("reused op id: %+v", m)
		}
		// Pipelined ops sent highest id first: each is applied once.
		for _, id := range []uint64{9, 7, 8} {
			ws.op(wsDoc, id, 3, `[{"op":"inc","path":"n","value":1}]`)
		}
		acked := map[uint64]int64{}
		for range 3 {
			m := ws.answer()
			if m.T != protocol.TAck || m.Dup {
				t.Fatalf("pipelined op: %+v", m)
			}
			acked[m.Op] = m.V
		}
		if len(acked) != 3 {
			t.Fatalf("acks %v", acked)
		}
		docURL := r.URL() + "/v1/docs/" + wsDoc
		if g := do(t, "GET", docURL, ""); g.Body["version"] != 6.0 || g.Body["data"].(map[string]any)["n"] != 5.0 {
			t.Fatalf("document: %s", g.Raw)
		}
		got := opsIn(t, docURL, "ws-c")
		for _, id := range []uint64{1, 2, 7, 8, 9} {
			if got[id] != 1 {
				t.Fatalf("op ids in the log: %v", fmt.Sprint(got))
			}
		}
	})

	// GET .../changes?since=0 answers the log while it starts at version 1
	// (opsIn above relies on it) and a snapshot once it no longer does.
	t.Run("ChangesSinceZero", func(t *testing.T) {
		long := r.URL() + "/v1/docs/" + coll + "/long"
		for i := range 12 {
			wantStatus(t, do(t, "PUT", long, fmt.Sprintf(`{"n":%d}`, i)), []int{201, 200}[min(i, 1)], "")
		}
		snap := do(t, "GET", long+"/changes?since=0", "")
		if cs, _ := snap.Body["changes"].([]any); len(cs) != 0 || snap.Body["snapshot"].(map[string]any)["n"] != 11.0 || snap.Body["version"] != 12.0 {
			t.Fatalf("since=0 behind the log: %s", snap.Raw)
		}
	})
}
