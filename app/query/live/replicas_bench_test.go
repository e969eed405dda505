package live_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/open-autoglm/autoglm/app/inmem"
	"github.com/open-autoglm/autoglm/app/internal/clienttest"
	"github.com/open-autoglm/autoglm/app/internal/servicetest"
	"github.com/open-autoglm/autoglm/app/protocol"
)

// BenchmarkAddedRemovedAcrossReplicas is the delivery latency of added and
// removed across two replicas under the peers workload's write rate: REST
// writes to replica A at 200 writes/s (100 documents, each write moving a
// document into or out of the result), a live query on replica B over
// WebSocket; the time from a write's call on A to the event on B. Both
// replicas run in process over the in-memory store and broadcast
// (servicetest), so the figure leaves out the store and broker latency of
// a Dapr profile.
func BenchmarkAddedRemovedAcrossReplicas(b *testing.B) {
	store, broker := inmem.NewStore(), &inmem.Broker{}
	a := servicetest.Start(b, servicetest.Options{Store: store, Broker: broker})
	rb := servicetest.Start(b, servicetest.Options{Store: store, Broker: broker})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	c, send, next := clienttest.Session(b, ctx, rb.WSURL(), "bench")
	c.SetReadLimit(16 << 20)
	send(protocol.Message{T: protocol.TSub, Coll: "items", QID: "open", Query: []byte(`{"where":[["status","==","open"]]}`)})
	for m := next(); m.T != protocol.TSynced; m = next() {
	}

	const docs, rate = 100, 200 // writes per second
	var (
		mu    sync.Mutex
		sent  = map[string]time.Time{} // "<doc> <added|removed>" → write call
		took  = make([]time.Duration, 0, b.N)
		done  = make(chan struct{})
		count int
	)
	go func() {
		defer close(done)
		for count < b.N {
			_, buf, err := c.Read(ctx)
			if err != nil {
				b.Error(err)
				return
			}
			m, err := protocol.Decode(buf)
			if err != nil {
				b.Error(err)
				return
			}
			if m.T == protocol.TPing {
				pong, _ := protocol.Encode(protocol.Message{T: protocol.TPong, TS: m.TS})
				if err := c.Write(ctx, websocket.MessageText, pong); err != nil {
					b.Error(err)
					return
				}
				continue
			}
			if m.T != protocol.TAdded && m.T != protocol.TRemoved {
				continue
			}
			key := m.Doc + " " + m.T
			mu.Lock()
			if at, ok := sent[key]; ok {
				took = append(took, time.Since(at))
				delete(sent, key)
				count++
			}
			mu.Unlock()
		}
	}()
	hc := &http.Client{Timeout: 10 * time.Second}
	open := make([]bool, docs)
	tick := time.NewTicker(time.Second / rate)
	defer tick.Stop()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		<-tick.C
		d := i % docs
		open[d] = !open[d]
		status, event := "closed", protocol.TRemoved
		if open[d] {
			status, event = "open", protocol.TAdded
		}
		id := fmt.Sprintf("d%03d", d)
		mu.Lock()
		sent["items/"+id+" "+event] = time.Now()
		mu.Unlock()
		go func() {
			req, _ := http.NewRequestWithContext(ctx, "PUT", a.URL()+"/v1/docs/items/"+id,
				strings.NewReader(fmt.Sprintf(`{"status":%q,"n":%d}`, status, i)))
			res, err := hc.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			res.Body.Close()
			if res.StatusCode/100 != 2 {
				b.Errorf("PUT %s: %d", id, res.StatusCode)
			}
		}()
	}
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		b.Fatalf("%d of %d events arrived", count, b.N)
	}
	b.StopTimer()
	reportPercentiles(b, took)
}
