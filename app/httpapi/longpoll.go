package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/protocol"
	"github.com/open-autoglm/autoglm/app/session"
)

// Long-poll buffer bounds: a client that stops polling makes the session's
// sends wait, then fail as a slow consumer, like a WebSocket client that
// stops reading.
const (
	pollMaxMessages = 1024
	pollMaxBytes    = 4 << 20
	pollBatch       = 256 // messages in one poll response at most
)

// pollResponse is the answer to opening a long-poll session and to every
// poll: the messages numbered after+1..seq, and the close when the session
// has ended and nothing is left to read.
type pollResponse struct {
	Session  string            `json:"session,omitempty"`
	Seq      uint64            `json:"seq"`
	Messages []json.RawMessage `json:"messages"`
	Close    *closeInfo        `json:"close,omitempty"`
}

// pollBuffer holds a long-poll session's outgoing messages, numbered from 1,
// until the client acknowledges them by polling with a later "after". A
// poll whose response was lost is simply repeated with the same "after".
type pollBuffer struct {
	mu      sync.Mutex
	first   uint64 // seq of msgs[0]
	msgs    []json.RawMessage
	bytes   int
	closed  *closeInfo
	wake    chan struct{} // closed and replaced whenever something changes
	gen     uint64        // the newest poll; older ones return at once
	polling int
	idle    time.Time // when the last poll ended
	timeout time.Duration
}

func newPollBuffer(timeout time.Duration) *pollBuffer {
	return &pollBuffer{first: 1, wake: make(chan struct{}), idle: time.Now(), timeout: timeout}
}

// changed wakes every waiter; call with mu held.
func (pb *pollBuffer) changed() {
	close(pb.wake)
	pb.wake = make(chan struct{})
}

// Send appends a message, waiting up to the write timeout for room.
func (pb *pollBuffer) Send(ctx context.Context, m protocol.Message) error {
	return pb.add(ctx)(protocol.Encode(m))
}

// SendShared appends a message shared with other connections, encoded once
// (the buffer keeps the shared bytes, which nobody modifies).
func (pb *pollBuffer) SendShared(ctx context.Context, m *protocol.Shared) error {
	return pb.add(ctx)(m.JSON())
}

// add returns a function appending an encoded message (or failing with the
// encoding's error).
func (pb *pollBuffer) add(ctx context.Context) func([]byte, error) error {
	return func(b []byte, err error) error {
		if err != nil {
			return err
		}
		return pb.append(ctx, b)
	}
}

func (pb *pollBuffer) append(ctx context.Context, b []byte) error {
	var timer <-chan time.Time
	for {
		pb.mu.Lock()
		if pb.closed != nil {
			pb.mu.Unlock()
			return errors.New("long-poll session closed")
		}
		if len(pb.msgs) == 0 || (len(pb.msgs) < pollMaxMessages && pb.bytes+len(b) <= pollMaxBytes) {
			pb.msgs = append(pb.msgs, b)
			pb.bytes += len(b)
			pb.changed()
			pb.mu.Unlock()
			return nil
		}
		wake := pb.wake
		pb.mu.Unlock()
		if timer == nil {
			t := time.NewTimer(pb.timeout)
			defer t.Stop()
			timer = t.C
		}
		select {
		case <-wake:
		case <-timer:
			return errors.New("long-poll client did not poll in time")
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// close records how the session ended; it is delivered after the messages.
func (pb *pollBuffer) close(c session.Close) {
	pb.mu.Lock()
	defer pb.mu.Unlock()
	pb.closed = &closeInfo{Code: c.Code, Reason: c.Reason}
	pb.changed()
}

// errBadAfter: "after" names messages the client has not been sent, or ones
// it acknowledged before.
var errBadAfter = core.Errorf(core.CodeBadRequest, "after is outside the messages of this session")

// poll acknowledges everything up to after, then waits up to wait for
// messages after it. A newer poll of the same session ends this one early.
func (pb *pollBuffer) poll(ctx context.Context, after uint64, wait time.Duration) (pollResponse, error) {
	pb.mu.Lock()
	last := pb.first + uint64(len(pb.msgs)) - 1
	if after+1 < pb.first || after > last {
		pb.mu.Unlock()
		return pollResponse{}, errBadAfter
	}
	drop := int(after + 1 - pb.first)
	for _, m := range pb.msgs[:drop] {
		pb.bytes -= len(m)
	}
	pb.msgs = append(pb.msgs[:0:0], pb.msgs[drop:]...)
	pb.first = after + 1
	pb.gen++
	gen := pb.gen
	pb.polling++
	pb.changed() // room for a waiting sender; older polls return
	pb.mu.Unlock()
	defer func() {
		pb.mu.Lock()
		pb.polling--
		pb.idle = time.Now()
		pb.mu.Unlock()
	}()

	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		pb.mu.Lock()
		res := pollResponse{Seq: after}
		switch {
		case len(pb.msgs) > 0:
			n := min(len(pb.msgs), pollBatch)
			res.Messages = append([]json.RawMessage(nil), pb.msgs[:n]...)
			res.Seq = after + uint64(n)
		case pb.closed != nil:
			res.Close = pb.closed
		}
		if res.Messages != nil || res.Close != nil || gen != pb.gen {
			pb.mu.Unlock()
			if res.Messages == nil {
				res.Messages = []json.RawMessage{}
			}
			return res, nil
		}
		wake := pb.wake
		pb.mu.Unlock()
		select {
		case <-wake:
		case <-timer.C:
			return pollResponse{Seq: after, Messages: []json.RawMessage{}}, nil
		case <-ctx.Done():
			return pollResponse{}, ctx.Err()
		}
	}
}

// idleFor reports how long nobody has polled (0 while a poll is waiting).
func (pb *pollBuffer) idleFor(now time.Time) time.Duration {
	pb.mu.Lock()
	defer pb.mu.Unlock()
	if pb.polling > 0 {
		return 0
	}
	return now.Sub(pb.idle)
}

// drained reports whether the client has read the close.
func (pb *pollBuffer) drained() bool {
	pb.mu.Lock()
	defer pb.mu.Unlock()
	return pb.closed != nil && len(pb.msgs) == 0 && pb.polling == 0
}

// serveOpen is POST /v1/poll with a hello message as the body: it opens a
// long-poll session and answers like a poll with after=0 (the welcome, with
// the session id to poll).
func (fb *fallback) serveOpen(w http.ResponseWriter, r *http.Request) {
	s := fb.s
	hello, release, ok := fb.admitOpen(w, r, http.MethodPost, "%s is not served here; POST a hello to open a session", func() ([]byte, bool) {
		return s.readJSONBody(w, r)
	})
	if !ok {
		return
	}
	pb := newPollBuffer(s.WriteTimeout)
	fs := fb.open(r, "longpoll", hello, pb, pb)
	go fb.runPoll(fs, release)
	res, err := pb.poll(r.Context(), 0, fb.pollWait)
	if err != nil {
		return // the client went away; the session ends when not polled
	}
	res.Session = fs.id
	writeJSON(w, http.StatusCreated, res)
}

// runPoll serves a long-poll session and ends it when nobody polls for the
// idle time; after it ended, the record stays until the client has read the
// close (or, again, the idle time passed). release gives back the session's
// connection slot when it ends.
func (fb *fallback) runPoll(fs *fbSession, release func()) {
	stopWatch := make(chan struct{})
	go func() {
		t := time.NewTicker(max(fb.idle/8, 100*time.Millisecond))
		defer t.Stop()
		for {
			select {
			case <-stopWatch:
				return
			case now := <-t.C:
				if fs.poll.idleFor(now) > fb.idle {
					fs.sess.Fail(protocol.CloseHeartbeatTimeout, "not polled")
					return
				}
			}
		}
	}()
	c := fs.run()
	release()
	close(stopWatch)
	fs.poll.close(c)
	t := time.NewTicker(max(fb.idle/8, 100*time.Millisecond))
	defer t.Stop()
	for now := range t.C {
		if fs.poll.drained() || fs.poll.idleFor(now) > fb.idle {
			break
		}
	}
	fb.forget(fs)
}

// servePollSession is GET /v1/poll/{session}?after=seq (wait for messages)
// and POST /v1/poll/{session} (send messages).
func (fb *fallback) servePollSession(w http.ResponseWriter, r *http.Request) {
	s := fb.s
	if r.Method == http.MethodPost || r.Method == http.MethodOptions {
		fb.servePost(w, r)
		return
	}
	if !s.corsOK(w, r) || !s.methodIs(w, r, http.MethodGet, "GET, POST, OPTIONS", "%s is not served on a long-poll session") {
		return
	}
	fs := fb.session(w, r)
	if fs == nil {
		return
	}
	if fs.poll == nil {
		s.fail(w, r, core.Errorf(core.CodeNotFound, "%s is an event-stream session; it is not polled", r.PathValue("session")))
		return
	}
	after, err := strconv.ParseUint(r.URL.Query().Get("after"), 10, 64)
	if err != nil {
		s.fail(w, r, core.Errorf(core.CodeBadRequest, "after must be the last sequence number received"))
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	res, err := fs.poll.poll(r.Context(), after, fb.pollWait)
	if err != nil {
		if r.Context().Err() == nil {
			s.fail(w, r, err)
		}
		return
	}
	writeJSON(w, http.StatusOK, res)
}
