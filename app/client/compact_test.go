package client_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/open-autoglm/autoglm/app/client"
	"github.com/open-autoglm/autoglm/app/internal/servicetest"
	"github.com/open-autoglm/autoglm/app/protocol"
)

// The client speaks protocol version 2 and restores the compact forms: a
// reader's deltas name the document, the author and the full stamp, on
// both encodings, as the writer's ack does.
func TestCompactFormsRestored(t *testing.T) {
	r := servicetest.Start(t, servicetest.Options{})
	for _, json := range []bool{false, true} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		var mu sync.Mutex
		var deltas []protocol.Message
		var sizes []int
		reader, err := client.Dial(ctx, r.WSURL(), client.Options{JSON: json, OnMessage: func(m protocol.Message, size int) {
			if m.T == protocol.TDelta {
				mu.Lock()
				deltas, sizes = append(deltas, m), append(sizes, size)
				mu.Unlock()
			}
		}})
		if err != nil {
			t.Fatal(err)
		}
		defer reader.Close()
		writer, err := client.Dial(ctx, r.WSURL(), client.Options{JSON: json})
		if err != nil {
			t.Fatal(err)
		}
		defer writer.Close()
		doc := "forms/compact-" + map[bool]string{false: "bin", true: "json"}[json]
		if _, err := reader.Subscribe(ctx, "forms/other", 0); err != nil {
			t.Fatal(err)
		}
		d, err := reader.Subscribe(ctx, doc, 0)
		if err != nil {
			t.Fatal(err)
		}
		for i := range 3 {
			ack, err := writer.Do(ctx, doc, int64(i), client.Set("title", "v"))
			if err != nil || ack.Version != int64(i+1) {
				t.Fatalf("ack %+v, %v", ack, err)
			}
		}
		if err := d.WaitVersion(ctx, 3); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		for _, m := range deltas {
			if m.Doc != doc || m.By != writer.ID() || m.HLC.Node == "" || m.H != 0 || m.A != 0 || m.Op != 0 {
				t.Errorf("json %v: delta as restored: %+v", json, m)
			}
		}
		if len(deltas) != 3 {
			t.Fatalf("json %v: %d deltas", json, len(deltas))
		}
		// The author's id travels with the first delta only.
		if sizes[1] >= sizes[0]-len(writer.ID()) || sizes[2] != sizes[1] {
			t.Errorf("json %v: delta sizes %v", json, sizes)
		}
		mu.Unlock()
	}
}

// A server older than the compact forms closes a proto 2 hello with 4504;
// the client says hello again with proto 1 and works on.
func TestFallsBackToProto1(t *testing.T) {
	var mu sync.Mutex
	var hellos []int
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{protocol.SubprotocolJSON}})
		if err != nil {
			return
		}
		defer conn.CloseNow()
		_, b, err := conn.Read(r.Context())
		if err != nil {
			return
		}
		m, _ := protocol.Decode(b)
		mu.Lock()
		hellos = append(hellos, m.Proto)
		mu.Unlock()
		if m.Proto != 1 {
			conn.Close(protocol.CloseUnsupported, "unsupported protocol version")
			return
		}
		welcome, _ := protocol.Encode(protocol.Message{T: protocol.TWelcome, Client: "c-1", Node: "old", HB: 15000, Proto: 1})
		conn.Write(r.Context(), websocket.MessageText, welcome)
		conn.Read(r.Context()) // until the client goes
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, protocol.SyncURL(srv.URL), client.Options{JSON: true, NoReconnect: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	mu.Lock()
	defer mu.Unlock()
	if len(hellos) != 2 || hellos[0] != protocol.Version || hellos[1] != 1 {
		t.Fatalf("hellos with proto %v", hellos)
	}
}
