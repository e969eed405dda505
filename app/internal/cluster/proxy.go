package cluster

import (
	"errors"
	"net"
	"sync"
	"testing"
)

// Proxy is a TCP relay in front of a backing service (Redis) that a test
// can freeze. While paused it still accepts connections and reads what
// either side sends, but forwards nothing, so from outside the service looks
// like a stopped process: calls hang until their timeouts, and what was sent
// meanwhile reaches the service, and is acted on, once it resumes. The
// service itself is shared by the machine and is never touched.
type Proxy struct {
	ln       net.Listener
	upstream string

	mu      sync.Mutex
	resumed chan struct{} // non-nil while paused; closed by Resume
	conns   map[net.Conn]struct{}
	closed  bool
}

// NewProxy listens on a free loopback port and relays every connection to
// upstream (host:port) until the test ends.
func NewProxy(t testing.TB, upstream string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{ln: ln, upstream: upstream, conns: map[net.Conn]struct{}{}}
	go p.accept()
	t.Cleanup(p.close)
	return p
}

// Addr is the address to give clients instead of the upstream's.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Pause stops forwarding in both directions.
func (p *Proxy) Pause() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.resumed == nil {
		p.resumed = make(chan struct{})
	}
}

// Resume forwards again, starting with what was held.
func (p *Proxy) Resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.resumed != nil {
		close(p.resumed)
		p.resumed = nil
	}
}

// wait blocks while the proxy is paused.
func (p *Proxy) wait() {
	p.mu.Lock()
	ch := p.resumed
	p.mu.Unlock()
	if ch != nil {
		<-ch
	}
}

func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		c.Close()
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *Proxy) accept() {
	for {
		down, err := p.ln.Accept()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			continue
		}
		go p.relay(down)
	}
}

func (p *Proxy) relay(down net.Conn) {
	if !p.track(down) {
		return
	}
	up, err := net.Dial("tcp", p.upstream)
	if err != nil || !p.track(up) {
		down.Close()
		return
	}
	closeBoth := sync.OnceFunc(func() {
		// Whatever the other direction still holds is forwarded first.
		p.wait()
		down.Close()
		up.Close()
		p.mu.Lock()
		delete(p.conns, down)
		delete(p.conns, up)
		p.mu.Unlock()
	})
	go p.pipe(up, down, closeBoth)
	p.pipe(down, up, closeBoth)
}

// pipe copies src to dst, holding each chunk while the proxy is paused.
func (p *Proxy) pipe(dst, src net.Conn, done func()) {
	defer done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.wait()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *Proxy) close() {
	p.Resume()
	p.mu.Lock()
	p.closed = true
	conns := p.conns
	p.conns = map[net.Conn]struct{}{}
	p.mu.Unlock()
	p.ln.Close()
	for c := range conns {
		c.Close()
	}
}
