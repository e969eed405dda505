package httpapi

import (
	"bufio"
	"context"
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"
)

// tcpPair is a loopback TCP connection: the server end for a wsOut, the
// client end for the test to read (or not).
func tcpPair(t *testing.T) (server, client net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { server.Close(); client.Close() })
	return server, client
}

func guardedOut(t *testing.T, conn net.Conn, timeout time.Duration) *wsOut {
	t.Helper()
	out := newWSOut()
	out.attach(conn)
	g, stop := newWriteGuard(context.Background(), func() { conn.Close() }, timeout)
	t.Cleanup(func() { stop() })
	out.guard = g
	return out
}

// readFrames parses unmasked server frames and returns their payloads.
func readFrames(t *testing.T, r io.Reader, n int, pause func(i int)) [][]byte {
	t.Helper()
	br := bufio.NewReaderSize(r, 512)
	var out [][]byte
	hdr := make([]byte, 8)
	for i := range n {
		pause(i)
		if _, err := io.ReadFull(br, hdr[:2]); err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if hdr[0] != 0x80|opBinary {
			t.Fatalf("frame %d: first byte %#x", i, hdr[0])
		}
		size := int(hdr[1])
		switch size {
		case 126:
			io.ReadFull(br, hdr[:2])
			size = int(binary.BigEndian.Uint16(hdr[:2]))
		case 127:
			io.ReadFull(br, hdr[:8])
			size = int(binary.BigEndian.Uint64(hdr))
		}
		p := make([]byte, size)
		if _, err := io.ReadFull(br, p); err != nil {
			t.Fatalf("frame %d payload: %v", i, err)
		}
		out = append(out, p)
	}
	return out
}

// The fan-out's non-blocking path, the buffered remainder it leaves, and
// the blocking path the session takes when the buffer is full all write
// one ordered stream: a reader slower than the writer still gets every
// frame once, in order, intact.
func TestWSOutKeepsOrderAndExactlyOnceUnderASlowReader(t *testing.T) {
	t.Parallel()
	server, client := tcpPair(t)
	out := guardedOut(t, server, 30*time.Second)
	const frames = 40000
	// The session's goroutine: flushes what queue left behind.
	stop := make(chan struct{})
	flushed := make(chan error, 1)
	go func() {
		for {
			select {
			case <-out.pending:
				if err := out.flush(); err != nil {
					flushed <- err
					return
				}
			case <-stop:
				flushed <- nil
				return
			}
		}
	}()
	var queued, sent int
	produced := make(chan struct{})
	refused := make(chan struct{}, 1) // the buffer was full
	go func() {
		defer close(produced)
		for i := range frames {
			p := make([]byte, 100+i%700) // frames of every header size class but the largest
			binary.BigEndian.PutUint32(p, uint32(i))
			if out.queue(opBinary, p) {
				queued++
				continue
			}
			// Refused (the buffer is full): the session sends it itself,
			// after everything queued before.
			sent++
			select {
			case refused <- struct{}{}:
			default:
			}
			if err := out.send(opBinary, p); err != nil {
				t.Errorf("send %d: %v", i, err)
				return
			}
		}
	}()
	got := readFrames(t, client, frames, func(i int) {
		if i%5000 == 0 {
			// The reader stalls until the socket and the buffer are full
			// (or nothing is left to write).
			select {
			case <-refused:
			case <-produced:
			}
		}
	})
	<-produced
	close(stop)
	if err := <-flushed; err != nil {
		t.Fatal(err)
	}
	for i, p := range got {
		if n := binary.BigEndian.Uint32(p); n != uint32(i) || len(p) != 100+i%700 {
			t.Fatalf("frame %d carries %d (%d bytes)", i, n, len(p))
		}
	}
	if queued == 0 || sent == 0 {
		t.Fatalf("queued %d, sent %d: both paths must have been taken", queued, sent)
	}
}

// A reader that stops reading gets its connection closed after the write
// timeout, whichever path filled the socket: queue refuses once its buffer
// is full, and the flush of that buffer fails.
func TestWSOutClosesAReaderThatStops(t *testing.T) {
	t.Parallel()
	server, _ := tcpPair(t)
	out := guardedOut(t, server, 200*time.Millisecond)
	p := make([]byte, 1000)
	start := time.Now()
	for {
		// The kernel's buffers grow for a while: fill them until a flush
		// has to wait for the reader.
		for i := 0; out.queue(opBinary, p); i++ {
			if i > 1e6 {
				t.Fatal("queue never refused a reader that does not read")
			}
		}
		if err := out.flush(); err != nil {
			break
		}
		if time.Since(start) > 20*time.Second {
			t.Fatal("flushes to a reader that does not read go on succeeding")
		}
	}
	if out.queue(opBinary, p) {
		t.Fatal("queue took a frame after the connection failed")
	}
}
