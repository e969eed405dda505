package httpapi_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/open-autoglm/autoglm/app/config"
	"github.com/open-autoglm/autoglm/app/internal/servicetest"
	"github.com/open-autoglm/autoglm/app/internal/testutil"
	"github.com/open-autoglm/autoglm/app/protocol"
)

// rawSubscriber is a WebSocket client reduced to what a benchmark needs:
// the upgrade by hand, masked frames out, and a reader that counts the
// delta frames it receives without decoding them.
type rawSubscriber struct {
	conn   net.Conn
	deltas *atomic.Int64
}

func dialRaw(tb testing.TB, addr, proto string, deltas *atomic.Int64) *rawSubscriber {
	tb.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: %s\r\n\r\n", protocol.PathSync, addr, proto)
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		tb.Fatalf("upgrade: %v %v", resp, err)
	}
	s := &rawSubscriber{conn: conn, deltas: deltas}
	go s.read(br)
	return s
}

// send writes m as one masked frame (a zero mask: the payload as is).
func (s *rawSubscriber) send(tb testing.TB, m protocol.Message) {
	tb.Helper()
	b, err := protocol.Encode(m)
	if err != nil {
		tb.Fatal(err)
	}
	if len(b) > 125 {
		tb.Fatal("frame too long for this client")
	}
	frame := append([]byte{0x81, 0x80 | byte(len(b)), 0, 0, 0, 0}, b...)
	if _, err := s.conn.Write(frame); err != nil {
		tb.Fatal(err)
	}
}

func (s *rawSubscriber) read(br *bufio.Reader) {
	hdr := make([]byte, 8)
	payload := make([]byte, 0, 4096)
	delta := []byte(`"t":"delta"`)
	for {
		if _, err := io.ReadFull(br, hdr[:2]); err != nil {
			return
		}
		n := int(hdr[1] & 0x7f)
		switch n {
		case 126:
			if _, err := io.ReadFull(br, hdr[:2]); err != nil {
				return
			}
			n = int(hdr[0])<<8 | int(hdr[1])
		case 127:
			if _, err := io.ReadFull(br, hdr[:8]); err != nil {
				return
			}
			n = 0
			for _, b := range hdr {
				n = n<<8 | int(b)
			}
		}
		payload = payload[:n]
		if _, err := io.ReadFull(br, payload); err != nil {
			return
		}
		if bytes.Contains(payload, delta) {
			s.deltas.Add(1)
		}
	}
}

// TestFanOutClients is the client process of BenchmarkWSFanOut: with
// FANOUT_ADDR set it subscribes FANOUT_SUBS raw clients to bench/d1 and
// prints how many deltas they received, whenever that changes, until its
// input closes. Without, it does nothing.
func TestFanOutClients(t *testing.T) {
	addr := os.Getenv("FANOUT_ADDR")
	if addr == "" {
		t.Skip("the client process of BenchmarkWSFanOut")
	}
	n, _ := strconv.Atoi(os.Getenv("FANOUT_SUBS"))
	var deltas atomic.Int64
	for i := range n {
		s := dialRaw(t, addr, os.Getenv("FANOUT_PROTO"), &deltas)
		s.send(t, protocol.Message{T: protocol.THello, Client: fmt.Sprintf("s%d", i)})
		s.send(t, protocol.Message{T: protocol.TSub, Doc: "bench/d1"})
	}
	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		close(done)
	}()
	last := int64(-1)
	for {
		select {
		case <-done:
			return
		case <-time.After(time.Millisecond):
		}
		if d := deltas.Load(); d != last {
			fmt.Printf("deltas %d\n", d)
			last = d
		}
	}
}

// BenchmarkWSFanOut is the peers workloads over real WebSocket
// connections: one document, N subscribers on the JSON subprotocol (in a
// child process, TestFanOutClients), writes paced through the REST API (100
// subscribers at 200 writes/s, 1000 at 20/s), so the sessions are idle
// between changes as they are under that load. Reported: CPU time of the
// server's process per delivery, the writes' own handling included.
func BenchmarkWSFanOut(b *testing.B) {
	for _, w := range []struct{ subs, rate int }{{100, 200}, {1000, 20}} {
		b.Run(fmt.Sprintf("%dx%d", w.subs, w.rate), func(b *testing.B) { benchWSFanOut(b, w.subs, w.rate) })
	}
}

func benchWSFanOut(b *testing.B, subscribers, rate int) {
	r := servicetest.Start(b, servicetest.Options{Collections: "collections:\n  bench: {}\n",
		// The counting clients answer no pings, and all come from one
		// address as one (anonymous) identity.
		Config: func(c *config.Config) {
			c.Heartbeat, c.MaxConnsPerAddr, c.MaxConnsPerIdentity = time.Hour, 0, 0
		}})
	addr := strings.TrimPrefix(r.URL(), "http://")
	doc := "bench/d1"
	var deltas atomic.Int64 // received by all clients so far
	child := exec.Command(os.Args[0], "-test.run", "^TestFanOutClients$")
	child.Env = append(os.Environ(), "FANOUT_ADDR="+addr, "FANOUT_SUBS="+strconv.Itoa(subscribers),
		"FANOUT_PROTO="+protocol.SubprotocolJSON)
	stdin, _ := child.StdinPipe()
	stdout, _ := child.StdoutPipe()
	child.Stderr = os.Stderr
	if err := child.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { stdin.Close(); _ = child.Wait() }()
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var n int64
			if _, err := fmt.Sscanf(sc.Text(), "deltas %d", &n); err == nil {
				deltas.Store(n)
			}
		}
	}()
	client := &http.Client{}
	write := func(i int) {
		req, _ := http.NewRequest("PATCH", r.URL()+"/v1/docs/"+doc,
			strings.NewReader(fmt.Sprintf(`{"ops":[{"op":"set","path":"f%d","value":"%040d"}]}`, i%100, i)))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Client-ID", "writer")
		req.Header.Set("X-Op-ID", fmt.Sprint(i+1))
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode >= 300 {
			b.Fatalf("write: %d", resp.StatusCode)
		}
	}
	// Every subscriber is live once a write reaches all of them.
	deadline := time.Now().Add(30 * time.Second)
	for i := 0; ; i++ {
		if time.Now().After(deadline) {
			b.Fatal("the subscribers did not all go live")
		}
		before := deltas.Load()
		write(1_000_000 + i)
		if testutil.Within(100*time.Millisecond, func() bool { return deltas.Load()-before == int64(subscribers) }) {
			break
		}
	}
	base := deltas.Load()
	start := benchCPU()
	b.ResetTimer()
	next := time.Now()
	for i := range b.N {
		next = next.Add(time.Second / time.Duration(rate))
		time.Sleep(time.Until(next)) // paces the writes at rate
		write(i)
	}
	want := base + int64(b.N*subscribers)
	for deltas.Load() < want {
		if time.Now().After(next.Add(30 * time.Second)) {
			b.Fatalf("%d of %d deliveries", deltas.Load()-base, want-base)
		}
		time.Sleep(100 * time.Microsecond) // polls finely: the wait is inside the timed loop
	}
	b.StopTimer()
	b.ReportMetric(float64(benchCPU()-start)/float64(b.N*subscribers), "cpu-ns/delivery")
}

func benchCPU() int64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}
