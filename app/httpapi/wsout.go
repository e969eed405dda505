package httpapi

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"syscall"
)

// WebSocket opcodes of the data frames the server writes.
const (
	opText   = 0x1
	opBinary = 0x2
)

// maxQueuedOut bounds the bytes wsOut buffers for a connection that does
// not keep up; past it, queue refuses and the session's own queue (and its
// overflow repair from the op log) takes over.
const maxQueuedOut = 256 << 10

// wsOut is the outbound side of one WebSocket connection. The WebSocket
// library reads, answers the handshake and writes control frames; data
// frames are framed here and written to the hijacked connection directly,
// so that:
//   - the hub's fan-out can hand a delta to an idle connection with one
//     non-blocking write(2) (queue), without waking the session's
//     goroutine;
//   - whatever piles up while the socket is busy leaves in one write(2)
//     of many frames;
//   - a blocking write (send, flush) is bounded by the writeGuard, which
//     closes the connection of a reader slower than the write timeout.
//
// Every byte goes through buf in order, the library's control frames
// included (outConn), so frames never interleave.
type wsOut struct {
	guard *writeGuard

	// flushMu makes blocking writers take turns; mu guards what follows
	// and is never held across a blocking write.
	flushMu sync.Mutex
	mu      sync.Mutex
	conn    net.Conn        // the hijacked connection (nil before the upgrade)
	raw     syscall.RawConn // for non-blocking writes; nil: queue refuses
	buf     []byte          // frames waiting to be written, in order
	spare   []byte          // the other buffer, while buf is being written
	scratch []byte          // one frame for queue's direct write
	writing bool            // a blocking write is under way, outside mu
	err     error           // the first write error: the connection is done
	pending chan struct{}   // ready when buf holds what only flush will write

	// tryWrite's attempt, made once per connection rather than a closure
	// per write: its argument and results, under mu.
	attempt func(fd uintptr) bool
	tryBuf  []byte
	tryN    int
	tryErr  error
}

func newWSOut() *wsOut {
	return &wsOut{pending: make(chan struct{}, 1)}
}

// appendFrame appends one unmasked, final data frame.
func appendFrame(b []byte, op byte, payload []byte) []byte {
	n := len(payload)
	switch {
	case n < 126:
		b = append(b, 0x80|op, byte(n))
	case n < 1<<16:
		b = append(b, 0x80|op, 126, byte(n>>8), byte(n))
	default:
		b = append(b, 0x80|op, 127, byte(uint64(n)>>56), byte(uint64(n)>>48), byte(uint64(n)>>40), byte(uint64(n)>>32),
			byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	return append(b, payload...)
}

// attach gives wsOut the hijacked connection.
func (o *wsOut) attach(c net.Conn) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.conn = c
	if sc, ok := c.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			o.raw = raw
			o.attempt = o.writeOnce
		}
	}
}

// queue takes one data frame without blocking: written at once when the
// connection is idle and its socket has room, else buffered (up to
// maxQueuedOut) for flush, with pending signalled. It reports whether it
// took the frame; false takes nothing.
func (o *wsOut) queue(op byte, payload []byte) bool {
	if o.guard.ctx.Err() != nil {
		return false
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.err != nil || o.raw == nil {
		return false
	}
	if o.writing || len(o.buf) > 0 {
		if len(o.buf)+len(payload)+14 > maxQueuedOut {
			return false
		}
		o.buf = appendFrame(o.buf, op, payload)
		o.signal()
		return true
	}
	o.scratch = appendFrame(o.scratch[:0], op, payload)
	n, err := o.tryWrite(o.scratch)
	if err != nil {
		o.err = err
		return false
	}
	if n < len(o.scratch) {
		o.buf = append(o.buf, o.scratch[n:]...)
		o.signal()
	}
	return true
}

// tryWrite makes one write(2) of b on the non-blocking socket: how much it
// took, 0 when the socket buffer is full.
func (o *wsOut) tryWrite(b []byte) (int, error) {
	o.tryBuf, o.tryN, o.tryErr = b, 0, nil
	err := o.raw.Write(o.attempt)
	n, werr := o.tryN, o.tryErr
	o.tryBuf = nil
	if werr == syscall.EAGAIN {
		return 0, nil
	}
	if err == nil {
		err = werr
	}
	if err != nil {
		return 0, err
	}
	return max(n, 0), nil
}

// writeOnce is the raw write of tryWrite: one attempt, never waiting for
// the socket.
func (o *wsOut) writeOnce(fd uintptr) bool {
	for {
		o.tryN, o.tryErr = syscall.Write(int(fd), o.tryBuf)
		if o.tryErr != syscall.EINTR {
			return true
		}
	}
}

func (o *wsOut) signal() {
	select {
	case o.pending <- struct{}{}:
	default:
	}
}

// send writes one data frame after everything before it, blocking up to the
// write timeout.
func (o *wsOut) send(op byte, payload []byte) error {
	o.mu.Lock()
	if o.err != nil {
		o.mu.Unlock()
		return o.err
	}
	o.buf = appendFrame(o.buf, op, payload)
	o.mu.Unlock()
	return o.flush()
}

// flush writes everything buffered, in as few write(2)s as the socket
// allows, blocking up to the write timeout per write.
func (o *wsOut) flush() error { return o.flushWith(o.guard.write) }

// flushWith is flush with the blocking write given: the guard's, or the
// connection's own for the library's writes, which it bounds itself (a
// close frame is still written after the session's context ended).
func (o *wsOut) flushWith(write func(io.Writer, []byte) error) error {
	o.flushMu.Lock()
	defer o.flushMu.Unlock()
	for {
		o.mu.Lock()
		if o.err != nil || len(o.buf) == 0 || o.conn == nil {
			err := o.err
			o.mu.Unlock()
			return err
		}
		b := o.buf
		o.buf, o.spare = o.spare[:0], nil
		o.writing = true
		o.mu.Unlock()

		err := write(o.conn, b)

		o.mu.Lock()
		o.writing = false
		if cap(b) <= maxQueuedOut {
			o.spare = b[:0]
		}
		if err != nil && o.err == nil {
			o.err = err
		}
		o.mu.Unlock()
	}
}

func writeAll(w io.Writer, b []byte) error {
	_, err := w.Write(b)
	return err
}

// outConn is the hijacked connection as the WebSocket library sees it: its
// writes (control frames: pongs, close) join the same ordered stream.
type outConn struct {
	net.Conn
	out *wsOut
}

func (c *outConn) Write(p []byte) (int, error) {
	c.out.mu.Lock()
	if c.out.err != nil {
		err := c.out.err
		c.out.mu.Unlock()
		return 0, err
	}
	c.out.buf = append(c.out.buf, p...)
	c.out.mu.Unlock()
	if err := c.out.flushWith(writeAll); err != nil {
		return 0, err
	}
	return len(p), nil
}

// hijackResponse hands the library a connection whose writes go through
// out.
type hijackResponse struct {
	http.ResponseWriter
	out *wsOut
}

func (h hijackResponse) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := h.ResponseWriter.(http.Hijacker)
	if !ok {
		if u, ok := h.ResponseWriter.(interface{ Unwrap() http.ResponseWriter }); ok {
			return hijackResponse{u.Unwrap(), h.out}.Hijack()
		}
		return nil, nil, errors.New("http.ResponseWriter does not implement http.Hijacker")
	}
	c, brw, err := hj.Hijack()
	if err != nil {
		return nil, nil, err
	}
	// The 101 response is out already; anything left goes first.
	if err := brw.Writer.Flush(); err != nil {
		c.Close()
		return nil, nil, err
	}
	h.out.attach(c)
	oc := &outConn{Conn: c, out: h.out}
	return oc, bufio.NewReadWriter(brw.Reader, bufio.NewWriter(oc)), nil
}
