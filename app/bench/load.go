package bench

import (
	"bytes"
	"context"
	"encoding/json"

	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/open-autoglm/autoglm/app/client"
	"github.com/open-autoglm/autoglm/app/merge"
	"github.com/open-autoglm/autoglm/app/protocol"
)

// Modes of delivering changes to subscribers.
const (
	ModeDelta = "delta" // WebSocket deltas (the product)
	ModeFull  = "full"  // WebSocket, whole document per change (sub full:true)
	ModePoll  = "poll"  // REST GET every interval, If-None-Match
)

// Target is the service under test and the documents the run uses.
type Target struct {
	URL        string // http://127.0.0.1:port
	Collection string
	Docs       int
	DocBytes   int
	Fields     int // fields per document; single-field writes pick one
	// Sample reads the server processes (nil: none).
	Procs func() map[string]int
}

// DocName is the i-th document of the run.
func (t Target) DocName(i int) string { return t.Collection + "/d" + strconv.Itoa(i) }

// Seed creates the documents with DocBytes of data in Fields fields.
func (t Target) Seed(ctx context.Context) error {
	per := max(t.DocBytes/t.Fields-10, 1)
	body := map[string]string{}
	for f := range t.Fields {
		body[field(f)] = string(bytes.Repeat([]byte{'x'}, per))
	}
	b, _ := json.Marshal(body)
	hc := &http.Client{Timeout: 30 * time.Second}
	var wg sync.WaitGroup
	errs := make(chan error, t.Docs)
	sem := make(chan struct{}, 8)
	for i := range t.Docs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			req, _ := http.NewRequestWithContext(ctx, http.MethodPut, protocol.DocURL(t.URL, t.DocName(i)), bytes.NewReader(b))
			req.Header.Set("Content-Type", "application/json")
			res, err := hc.Do(req)
			if err != nil {
				errs <- err
				return
			}
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode/100 != 2 {
				errs <- fmt.Errorf("seed %s: status %d", t.DocName(i), res.StatusCode)
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

func field(i int) string { return fmt.Sprintf("f%02d", i) }

// LatencyConfig is one propagation run.
type LatencyConfig struct {
	Mode         string
	Binary       bool // WebSocket binary subprotocol (delta and full)
	Subscribers  int
	Writers      int
	Rate         float64 // single-field writes per second, all writers together
	Duration     time.Duration
	PollInterval time.Duration
	Drain        time.Duration // how long to wait for the last deliveries
}

// LatencyResult is what one propagation run measured.
type LatencyResult struct {
	Run         int     `json:"run"`
	Mode        string  `json:"mode"`
	Encoding    string  `json:"encoding"`
	Subscribers int     `json:"subscribers"`
	Docs        int     `json:"docs"`
	DocBytes    int     `json:"doc_bytes"`
	Writers     int     `json:"writers"`
	Rate        float64 `json:"target_rate"`
	Seconds     float64 `json:"seconds"`

	Sent     int64   `json:"ops_sent"`
	Accepted int64   `json:"ops_accepted"`
	Rejected int64   `json:"ops_rejected"`
	PerSec   float64 `json:"accepted_per_sec"`

	Propagation Summary `json:"propagation"`
	Ack         Summary `json:"ack"`

	// Expected is Σ over subscribers of the versions written to their
	// document; Visible how many of those each subscriber got (a snapshot
	// covers every version up to its own).
	Expected int64 `json:"expected_deliveries"`
	Visible  int64 `json:"visible_deliveries"`
	Missed   int64 `json:"missed"`
	Dup      int64 `json:"duplicated"`
	Errors   int64 `json:"errors"`
	// Polls and PollsChanged count the polling baseline's requests and the
	// ones answered with a new version (the rest were 304 Not Modified).
	Polls        int64 `json:"polls,omitempty"`
	PollsChanged int64 `json:"polls_changed,omitempty"`

	// Bytes per update per subscriber, server → subscriber and back, and per
	// op for the writers.
	SubDown   float64 `json:"sub_down_bytes_per_update"`
	SubUp     float64 `json:"sub_up_bytes_per_update"`
	WriterUp  float64 `json:"writer_up_bytes_per_op"`
	WriterAck float64 `json:"writer_down_bytes_per_op"`

	Usage map[string]Usage `json:"usage,omitempty"`
	CDF   []Point          `json:"cdf,omitempty"`
}

// sendLog maps (document, version) to the time its op was sent.
type sendLog struct {
	mu sync.Mutex
	m  []map[int64]int64
}

func newSendLog(docs int) *sendLog {
	l := &sendLog{m: make([]map[int64]int64, docs)}
	for i := range l.m {
		l.m[i] = map[int64]int64{}
	}
	return l
}

func (l *sendLog) put(doc int, v, at int64) {
	l.mu.Lock()
	l.m[doc][v] = at
	l.mu.Unlock()
}

func (l *sendLog) final(doc int) int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	var v int64
	for k := range l.m[doc] {
		v = max(v, k)
	}
	return v
}

// subscriber is one watching client.
type subscriber struct {
	doc    int
	stream Stream
	mu     sync.Mutex // guards stream while the reader runs
	synced chan struct{}
	errs   atomic.Int64
	polls  atomic.Int64 // polling baseline: requests made
	fresh  atomic.Int64 // polling baseline: requests that returned a new version
}

func (s *subscriber) last() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stream.Last
}

// RunLatency measures propagation from writers to subscribers in one mode.
func RunLatency(ctx context.Context, t Target, cfg LatencyConfig) (*LatencyResult, error) {
	if cfg.Drain <= 0 {
		cfg.Drain = 15 * time.Second
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = time.Second
	}
	enc := "json"
	if cfg.Binary {
		enc = "binary"
	}
	if cfg.Mode == ModePoll {
		enc = "rest"
	}
	res := &LatencyResult{Mode: cfg.Mode, Encoding: enc, Subscribers: cfg.Subscribers, Docs: t.Docs, DocBytes: t.DocBytes,
		Writers: cfg.Writers, Rate: cfg.Rate}
	runID := strconv.FormatInt(time.Now().UnixNano()%1e9, 36)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	// Subscribers.
	subCount := &Counter{}
	subs := make([]*subscriber, cfg.Subscribers)
	for i := range subs {
		subs[i] = &subscriber{doc: i % t.Docs, synced: make(chan struct{}),
			stream: Stream{Delta: cfg.Mode == ModeDelta}}
	}
	var readers sync.WaitGroup
	var conns []*client.Conn
	var pollStop atomic.Bool
	var pollWG sync.WaitGroup
	if cfg.Mode == ModePoll {
		hc := subCount.HTTPClient(cfg.Subscribers)
		for _, s := range subs {
			pollWG.Add(1)
			go func() {
				defer pollWG.Done()
				poll(ctx, hc, protocol.DocURL(t.URL, t.DocName(s.doc)), s, cfg.PollInterval, &pollStop)
			}()
		}
	} else {
		hc := subCount.HTTPClient(cfg.Subscribers)
		conns = make([]*client.Conn, len(subs))
		err := parallel(ctx, len(subs), 32, func(i int) error {
			c, err := dial(ctx, t.URL, hc, cfg.Binary, "sub-"+runID+"-"+strconv.Itoa(i))
			if err != nil {
				return fmt.Errorf("subscriber %d: %w", i, err)
			}
			conns[i] = c
			s := subs[i]
			readers.Add(1)
			go func() { defer readers.Done(); readSubscriber(ctx, c, s) }()
			_, err = c.Sub(ctx, protocol.Message{T: protocol.TSub, Doc: t.DocName(s.doc), Full: cfg.Mode == ModeFull})
			return err
		})
		defer func() {
			closeAll(conns)
			cancel()
			readers.Wait()
		}()
		if err != nil {
			return nil, err
		}
	}
	for i, s := range subs {
		select {
		case <-s.synced:
		case <-time.After(30 * time.Second):
			return nil, fmt.Errorf("subscriber %d did not sync within 30s", i)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	start := make([]int64, len(subs))
	for i, s := range subs {
		start[i] = s.last()
	}

	// Writers.
	log := newSendLog(t.Docs)
	wCount := &Counter{}
	whc := wCount.HTTPClient(cfg.Writers)
	writers := make([]*writer, cfg.Writers)
	for i := range writers {
		c, err := dial(ctx, t.URL, whc, cfg.Binary && cfg.Mode != ModePoll, "writer-"+runID+"-"+strconv.Itoa(i))
		if err != nil {
			return nil, fmt.Errorf("writer %d: %w", i, err)
		}
		w := &writer{c: c, log: log, sent: map[uint64]sentOp{}}
		for d := i; d < t.Docs; d += cfg.Writers {
			w.docs = append(w.docs, d)
		}
		writers[i] = w
		readers.Add(1)
		go func() { defer readers.Done(); w.readAcks(ctx) }()
		defer closeConn(c)
	}

	sampler := startSampler(t.Procs)
	subBytes0, wBytes0 := subCount.Load(), wCount.Load()
	began := time.Now()
	var wwg sync.WaitGroup
	interval := time.Duration(float64(time.Second) * float64(cfg.Writers) / cfg.Rate)
	for i, w := range writers {
		if len(w.docs) == 0 {
			continue
		}
		wwg.Add(1)
		go func() {
			defer wwg.Done()
			// Stagger the writers over one interval so the load is smooth.
			offset := interval * time.Duration(i) / time.Duration(len(writers))
			w.run(ctx, t, began.Add(offset), interval, began.Add(cfg.Duration))
		}()
	}
	wwg.Wait()
	sendEnd := time.Now()
	// Every op answered, then every subscriber caught up (or the drain time
	// ran out: whatever is missing then is reported as missed).
	deadline := time.Now().Add(cfg.Drain)
	for time.Now().Before(deadline) && !allAnswered(writers) {
		time.Sleep(10 * time.Millisecond)
	}
	finals := make([]int64, t.Docs)
	for d := range finals {
		finals[d] = log.final(d)
	}
	for time.Now().Before(deadline) {
		behind := false
		for i, s := range subs {
			if f := finals[s.doc]; f > start[i] && s.last() < f {
				behind = true
				break
			}
		}
		if !behind {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := ctx.Err(); err != nil {
		return nil, err // interrupted: what was not delivered is not missed
	}
	pollStop.Store(true)
	res.Usage = sampler.stop()
	subBytes, wBytes := subCount.Load().Sub(subBytes0), wCount.Load().Sub(wBytes0)
	pollWG.Wait()
	closeAll(conns)
	for _, w := range writers {
		closeConn(w.c)
	}
	cancel()
	readers.Wait()

	// Account.
	res.Seconds = round3(sendEnd.Sub(began).Seconds())
	var ackLat []time.Duration
	for _, w := range writers {
		res.Sent += w.nSent
		res.Accepted += w.nAcked
		res.Rejected += w.nRejected
		ackLat = append(ackLat, w.ackLat...)
	}
	res.PerSec = round3(float64(res.Accepted) / sendEnd.Sub(began).Seconds())
	res.Ack = Summarize(ackLat)
	var prop []time.Duration
	for i, s := range subs {
		s.mu.Lock()
		st := s.stream
		s.mu.Unlock()
		final := max(finals[s.doc], start[i])
		st.Finish(final)
		res.Expected += final - start[i]
		res.Visible += min(st.Last, final) - start[i]
		res.Missed += st.Missed
		res.Dup += st.Dup
		res.Errors += s.errs.Load()
		res.Polls += s.polls.Load()
		res.PollsChanged += s.fresh.Load()
		d := s.doc
		prop = st.Latencies(prop, func(v int64) (int64, bool) {
			at, ok := log.m[d][v]
			return at, ok
		})
	}
	res.Propagation = Summarize(prop)
	res.CDF = CDF(prop, 400)
	if res.Expected > 0 {
		res.SubDown = round3(float64(subBytes.Read) / float64(res.Expected))
		res.SubUp = round3(float64(subBytes.Written) / float64(res.Expected))
	}
	if res.Sent > 0 {
		res.WriterUp = round3(float64(wBytes.Written) / float64(res.Sent))
		res.WriterAck = round3(float64(wBytes.Read) / float64(res.Sent))
	}
	return res, nil
}

func readSubscriber(ctx context.Context, c *client.Conn, s *subscriber) {
	synced := false
	_ = c.ServeHeads(ctx, func(now time.Time, m client.Head) {
		switch m.T {
		case protocol.TSnap, protocol.TDelta:
			s.mu.Lock()
			if !synced {
				s.stream.Start(m.V)
			} else {
				s.stream.Receive(m.V, now)
			}
			s.mu.Unlock()
		case protocol.TSynced:
			if !synced {
				synced = true
				s.mu.Lock()
				s.stream.Start(m.V)
				s.mu.Unlock()
				close(s.synced)
			}
		case protocol.TError:
			s.errs.Add(1)
		}
	})
	if ctx.Err() == nil && !synced {
		s.errs.Add(1)
		close(s.synced)
	}
}

// poll GETs the document every interval (If-None-Match: the version held)
// until stop is set, recording each new version it sees.
func poll(ctx context.Context, hc *http.Client, url string, s *subscriber, every time.Duration, stop *atomic.Bool) {
	get := func() (int64, bool) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if v := s.last(); v > 0 {
			req.Header.Set("If-None-Match", `"`+strconv.FormatInt(v, 10)+`"`)
		}
		s.polls.Add(1)
		res, err := hc.Do(req)
		if err != nil {
			if ctx.Err() == nil {
				s.errs.Add(1)
			}
			return 0, false
		}
		defer res.Body.Close()
		if res.StatusCode == http.StatusNotModified {
			_, _ = io.Copy(io.Discard, res.Body)
			return 0, false
		}
		var body struct {
			Version int64 `json:"version"`
		}
		if res.StatusCode != http.StatusOK || json.NewDecoder(res.Body).Decode(&body) != nil {
			s.errs.Add(1)
			_, _ = io.Copy(io.Discard, res.Body)
			return 0, false
		}
		_, _ = io.Copy(io.Discard, res.Body)
		return body.Version, true
	}
	v, ok := get()
	s.mu.Lock()
	if ok {
		s.stream.Start(v)
	}
	s.mu.Unlock()
	close(s.synced)
	// Pollers start at random points of the interval, as independent
	// clients would.
	t := time.NewTimer(time.Duration(rand.Int64N(int64(every))))
	defer t.Stop()
	for !stop.Load() {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if v, ok := get(); ok {
			now := time.Now()
			s.mu.Lock()
			if v > s.stream.Last {
				s.stream.Receive(v, now)
				s.fresh.Add(1)
			}
			s.mu.Unlock()
		}
		t.Reset(every)
	}
}

type sentOp struct {
	doc int
	at  int64
}

// writer sends single-field ops on its documents at a fixed rate and
// records when each was sent and acknowledged.
type writer struct {
	c    *client.Conn
	docs []int
	log  *sendLog

	mu        sync.Mutex
	next      uint64
	sent      map[uint64]sentOp
	nSent     int64
	nAcked    int64
	nRejected int64
	ackLat    []time.Duration
}

func (w *writer) run(ctx context.Context, t Target, first time.Time, every time.Duration, until time.Time) {
	k := 0
	for at := first; at.Before(until); at = at.Add(every) {
		if d := time.Until(at); d > 0 {
			select {
			case <-time.After(d):
			case <-ctx.Done():
				return
			}
		}
		doc := w.docs[k%len(w.docs)]
		k++
		now := time.Now()
		w.mu.Lock()
		w.next++
		id := w.next
		w.sent[id] = sentOp{doc: doc, at: now.UnixNano()}
		w.nSent++
		w.mu.Unlock()
		m := protocol.Message{T: protocol.TOp, Doc: t.DocName(doc), Op: id, Ops: []merge.FieldOp{{
			Op: merge.KindSet, Path: field(rand.IntN(t.Fields)),
			Value: json.RawMessage(strconv.FormatInt(now.UnixMicro(), 10)),
		}}}
		if err := w.c.Send(ctx, m); err != nil {
			return
		}
	}
}

func (w *writer) readAcks(ctx context.Context) {
	_ = w.c.ServeHeads(ctx, func(at time.Time, m client.Head) {
		if m.T != protocol.TAck && m.T != protocol.TReject {
			return
		}
		now := at.UnixNano()
		w.mu.Lock()
		op, ok := w.sent[m.Op]
		delete(w.sent, m.Op)
		if ok {
			if m.T == protocol.TAck {
				w.nAcked++
				w.ackLat = append(w.ackLat, time.Duration(now-op.at))
			} else {
				w.nRejected++
			}
		}
		w.mu.Unlock()
		if ok && m.T == protocol.TAck && !m.Dup {
			w.log.put(op.doc, m.V, op.at)
		}
	})
}

func allAnswered(ws []*writer) bool {
	for _, w := range ws {
		w.mu.Lock()
		n := len(w.sent)
		w.mu.Unlock()
		if n > 0 {
			return false
		}
	}
	return true
}

// parallel runs f(0..n-1) with at most width at once and returns the first
// error.
func parallel(ctx context.Context, n, width int, f func(i int) error) error {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		ferr error
	)
	sem := make(chan struct{}, width)
	for i := range n {
		mu.Lock()
		failed := ferr != nil
		mu.Unlock()
		if failed || ctx.Err() != nil {
			break
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := f(i); err != nil {
				mu.Lock()
				if ferr == nil {
					ferr = err
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if ferr == nil && ctx.Err() != nil {
		return ctx.Err()
	}
	return ferr
}
