package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/open-autoglm/autoglm/app/client"
	"github.com/open-autoglm/autoglm/app/merge"
	"github.com/open-autoglm/autoglm/app/protocol"
)

// sampler reads the server processes at the start and end of a phase and
// their RSS every 200 ms in between (for the peak).
type sampler struct {
	procs   map[string]int
	machine ProcSample
	start   map[string]ProcSample
	peak    map[string]int64
	mu      sync.Mutex
	done    chan struct{}
	wg      sync.WaitGroup
}

func startSampler(procs func() map[string]int) *sampler {
	s := &sampler{start: map[string]ProcSample{}, peak: map[string]int64{}, done: make(chan struct{})}
	if procs == nil {
		return s
	}
	s.procs = procs()
	s.machine, _ = ReadMachine()
	for name, pid := range s.procs {
		if p, err := ReadProc(pid); err == nil {
			s.start[name] = p
		}
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-s.done:
				return
			case <-t.C:
				for name, pid := range s.procs {
					if p, err := ReadProc(pid); err == nil {
						s.mu.Lock()
						s.peak[name] = max(s.peak[name], p.RSS)
						s.mu.Unlock()
					}
				}
			}
		}
	}()
	return s
}

func (s *sampler) stop() map[string]Usage {
	close(s.done)
	s.wg.Wait()
	if len(s.procs) == 0 {
		return nil
	}
	out := map[string]Usage{}
	for name, pid := range s.procs {
		a, ok := s.start[name]
		b, err := ReadProc(pid)
		if !ok || err != nil {
			continue
		}
		out[name] = Between(a, b, s.peak[name])
	}
	// Whatever else ran on the machine meanwhile (builds, tests): the
	// busy CPU of the machine minus the processes above.
	if m, err := ReadMachine(); err == nil && s.machine.CPUTicks > 0 {
		busy := Between(s.machine, m, 0).CPUCores
		for _, u := range out {
			busy -= u.CPUCores
		}
		out["others"] = Usage{CPUCores: round3(max(busy, 0))}
	}
	return out
}

// ThroughputConfig is a closed-loop write run: Conns connections keep
// Window ops each in flight, over Docs documents (1: one hot document).
type ThroughputConfig struct {
	Name     string
	Docs     int
	Conns    int
	Window   int
	Duration time.Duration
	Binary   bool
}

// ThroughputResult is what a throughput run measured.
type ThroughputResult struct {
	Run      int              `json:"run"`
	Name     string           `json:"name"`
	Docs     int              `json:"docs"`
	Conns    int              `json:"conns"`
	Window   int              `json:"window"`
	Seconds  float64          `json:"seconds"`
	Accepted int64            `json:"accepted"`
	Rejected int64            `json:"rejected"`
	Codes    map[string]int64 `json:"reject_codes,omitempty"`
	PerSec   float64          `json:"accepted_per_sec"`
	Ack      Summary          `json:"ack"`
	Usage    map[string]Usage `json:"usage,omitempty"`
}

// RunThroughput measures accepted writes per second.
func RunThroughput(ctx context.Context, t Target, cfg ThroughputConfig) (*ThroughputResult, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	runID := strconv.FormatInt(time.Now().UnixNano()%1e9, 36)
	hc := (&Counter{}).HTTPClient(cfg.Conns)
	res := &ThroughputResult{Name: cfg.Name, Docs: cfg.Docs, Conns: cfg.Conns, Window: cfg.Window}
	var (
		accepted, rejected atomic.Int64
		mu                 sync.Mutex
		lat                []time.Duration
		next               atomic.Uint64
		readers, senders   sync.WaitGroup
		stop               atomic.Bool
		codes              = map[string]int64{}
	)
	conns := make([]*client.Conn, cfg.Conns)
	for i := range conns {
		c, err := dial(ctx, t.URL, hc, cfg.Binary, "tp-"+runID+"-"+strconv.Itoa(i))
		if err != nil {
			return nil, fmt.Errorf("throughput conn %d: %w", i, err)
		}
		conns[i] = c
		defer closeConn(c)
	}
	sampler := startSampler(t.Procs)
	began := time.Now()
	var lastAck atomic.Int64
	for _, c := range conns {
		tokens := make(chan struct{}, cfg.Window)
		sentAt := sync.Map{}
		readers.Add(1)
		go func() {
			defer readers.Done()
			_ = c.ServeHeads(ctx, func(now time.Time, m client.Head) {
				if m.T != protocol.TAck && m.T != protocol.TReject {
					return
				}
				if at, ok := sentAt.LoadAndDelete(m.Op); ok {
					if m.T == protocol.TAck {
						accepted.Add(1)
						mu.Lock()
						lat = append(lat, now.Sub(at.(time.Time)))
						mu.Unlock()
					} else {
						rejected.Add(1)
						mu.Lock()
						codes[string(m.Code)]++
						mu.Unlock()
					}
					lastAck.Store(now.UnixNano())
					<-tokens
				}
			})
		}()
		senders.Add(1)
		go func() {
			defer senders.Done()
			var op uint64
			for !stop.Load() {
				select {
				case tokens <- struct{}{}:
				case <-ctx.Done():
					return
				}
				op++
				d := int(next.Add(1) % uint64(cfg.Docs))
				sentAt.Store(op, time.Now())
				m := protocol.Message{T: protocol.TOp, Doc: t.DocName(d), Op: op, Ops: []merge.FieldOp{{
					Op: merge.KindSet, Path: field(rand.IntN(t.Fields)), Value: []byte(strconv.FormatUint(op, 10)),
				}}}
				if err := c.Send(ctx, m); err != nil {
					return
				}
			}
			// Wait for this connection's window to drain.
			for i := 0; i < cfg.Window; i++ {
				select {
				case tokens <- struct{}{}:
				case <-time.After(30 * time.Second):
					return
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	time.Sleep(cfg.Duration)
	stop.Store(true)
	senders.Wait()
	res.Usage = sampler.stop()
	for _, c := range conns {
		closeConn(c)
	}
	cancel()
	readers.Wait()
	end := time.Unix(0, lastAck.Load())
	res.Seconds = round3(end.Sub(began).Seconds())
	res.Accepted, res.Rejected = accepted.Load(), rejected.Load()
	if len(codes) > 0 {
		res.Codes = codes
	}
	if res.Seconds > 0 {
		res.PerSec = round3(float64(res.Accepted) / end.Sub(began).Seconds())
	}
	res.Ack = Summarize(lat)
	return res, nil
}

// IdleResult is the memory cost of idle connections.
type IdleResult struct {
	Conns        int     `json:"conns"`
	Opened       int     `json:"opened"`
	AppRSSBefore float64 `json:"app_rss_before_mib"`
	AppRSS       float64 `json:"app_rss_mib"`
	PerConnKiB   float64 `json:"per_conn_kib"`
	DaprdRSS     float64 `json:"daprd_rss_mib"`
	Error        string  `json:"error,omitempty"`
}

// RunIdle opens n WebSocket sessions that say hello, watch a document and
// then only answer heartbeats, and reads the app's RSS.
func RunIdle(ctx context.Context, t Target, n int, binary bool, settle time.Duration) (*IdleResult, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	res := &IdleResult{Conns: n}
	procs := map[string]int{}
	if t.Procs != nil {
		procs = t.Procs()
	}
	rss := func(name string) float64 {
		if pid, ok := procs[name]; ok {
			if p, err := ReadProc(pid); err == nil {
				return mib(p.RSS)
			}
		}
		return 0
	}
	res.AppRSSBefore = rss("app")
	hc := (&Counter{}).HTTPClient(n)
	conns := make([]*client.Conn, n)
	var readers sync.WaitGroup
	runID := strconv.FormatInt(time.Now().UnixNano()%1e9, 36)
	err := parallel(ctx, n, 64, func(i int) error {
		c, err := dial(ctx, t.URL, hc, binary, "idle-"+runID+"-"+strconv.Itoa(i))
		if err != nil {
			return fmt.Errorf("idle conn %d: %w", i, err)
		}
		conns[i] = c
		if _, err := c.Sub(ctx, protocol.Message{T: protocol.TSub, Doc: t.Collection + "/idle" + strconv.Itoa(i%100)}); err != nil {
			return err
		}
		readers.Add(1)
		go func() {
			defer readers.Done()
			_ = c.ServeHeads(ctx, func(time.Time, client.Head) {})
		}()
		return nil
	})
	for _, c := range conns {
		if c != nil {
			res.Opened++
		}
	}
	if err != nil {
		res.Error = err.Error()
	}
	select {
	case <-time.After(settle):
	case <-ctx.Done():
	}
	res.AppRSS = rss("app")
	res.DaprdRSS = rss("daprd")
	if res.Opened > 0 {
		res.PerConnKiB = round3((res.AppRSS - res.AppRSSBefore) * 1024 / float64(res.Opened))
	}
	closeAll(conns)
	cancel()
	readers.Wait()
	return res, err
}

// closeAll closes connections in parallel (each close is a handshake).
func closeAll(conns []*client.Conn) {
	_ = parallel(context.Background(), len(conns), 256, func(i int) error {
		if conns[i] != nil {
			closeConn(conns[i])
		}
		return nil
	})
}
