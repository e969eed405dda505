package session

import (
	"context"
	"sync"

	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/protocol"
)

// wire puts the deltas and acks of a connection that asked for protocol
// version 2 into the compact forms (docs/protocol.md, "Compact forms"):
// the handle the client gave a document in its sub replaces the document
// name, a number replaces the author's id after the connection has heard
// it once, and a stamp of the author or of this replica leaves its node
// out. Version 1 connections get every message as it is.
type wire struct {
	mu      sync.Mutex
	on      bool
	node    string // this replica's node id, as the welcome names it
	client  string
	handles map[string]uint64 // document → handle
	docs    map[uint64]string // handle → document
	known   map[uint64]struct{}
}

// maxKnownAuthors bounds the author numbers one connection is told; later
// authors travel by name.
const maxKnownAuthors = 4096

// maxHandle bounds the handles a client may give (they are small numbers).
const maxHandle = 1 << 30

// start switches the connection to the compact forms from proto 2 on.
func (w *wire) start(proto int, client, node string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.on, w.client, w.node = proto >= 2, client, node
	w.handles, w.docs, w.known = map[string]uint64{}, map[uint64]string{}, map[uint64]struct{}{}
}

// bind gives doc the handle h of its sub (0: none); a handle is one
// document's at a time.
func (w *wire) bind(doc string, h uint64) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.on {
		return nil
	}
	if h > maxHandle {
		return core.Errorf(core.CodeBadRequest, "handle %d over %d", h, maxHandle)
	}
	if other, ok := w.docs[h]; ok && h != 0 && other != doc {
		return core.Errorf(core.CodeBadRequest, "handle %d is already %s's", h, truncate(other, 200))
	}
	if old, ok := w.handles[doc]; ok {
		delete(w.docs, old)
		delete(w.handles, doc)
	}
	if h != 0 {
		w.handles[doc], w.docs[h] = h, doc
	}
	return nil
}

func (w *wire) unbind(doc string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if h, ok := w.handles[doc]; ok {
		delete(w.docs, h)
		delete(w.handles, doc)
	}
}

// forms returns the handle and author number m travels with on this
// connection, and whether the author number is new to it (then by goes
// along).
func (w *wire) forms(m protocol.Message) (h, a uint64, define bool, ok bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.on || m.T != protocol.TDelta && m.T != protocol.TAck {
		return 0, 0, false, false
	}
	if m.QID == "" {
		h = w.handles[m.Doc]
	}
	if m.By != "" {
		a = authors.id(m.By)
		if _, seen := w.known[a]; !seen {
			if len(w.known) >= maxKnownAuthors {
				a = 0
			} else {
				w.known[a] = struct{}{}
				define = true
			}
		}
	}
	return h, a, define, true
}

func (w *wire) wrap(send Sender) Sender {
	ws := wireSender{Sender: send, w: w}
	if ss, ok := send.(SharedSender); ok {
		return wireSharedSender{wireSender: ws, shared: ss}
	}
	return ws
}

type wireSender struct {
	Sender
	w *wire
}

func (ws wireSender) Send(ctx context.Context, m protocol.Message) error {
	if h, a, define, ok := ws.w.forms(m); ok {
		m = protocol.CompactFor(m, h, a, define, ws.w.node, ws.w.client)
	}
	return ws.Sender.Send(ctx, m)
}

type wireSharedSender struct {
	wireSender
	shared SharedSender
}

func (ws wireSharedSender) SendShared(ctx context.Context, m *protocol.Shared) error {
	if h, a, define, ok := ws.w.forms(m.Msg); ok {
		m = m.CompactFor(h, a, define, ws.w.node)
	}
	return ws.shared.SendShared(ctx, m)
}

// authors numbers the authors of deltas for every connection of the
// process, so connections that know the same authors share encodings. A
// number is never reused: when the table is full it starts over with new
// numbers, and connections hear of the new ones as of any author.
var authors = &authorTable{ids: map[string]uint64{}}

const maxAuthors = 1 << 16

type authorTable struct {
	mu   sync.RWMutex
	ids  map[string]uint64
	next uint64
}

func (t *authorTable) id(by string) uint64 {
	t.mu.RLock()
	id, ok := t.ids[by]
	t.mu.RUnlock()
	if ok {
		return id
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if id, ok := t.ids[by]; ok {
		return id
	}
	if len(t.ids) >= maxAuthors {
		clear(t.ids)
	}
	t.next++
	t.ids[by] = t.next
	return t.next
}
