package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/open-autoglm/autoglm/app/internal/daprrun"
	"github.com/open-autoglm/autoglm/app/protocol"
)

// The peer comparison runs one workload against Open-AutoGLM and against the
// Yjs sync servers web teams run today, interleaved in one run: one document
// of 100 string fields (~10 KB), N subscribers in two client processes, one
// writer setting one field to a 40-byte value per update. The clients are
// node processes (peers/driver.mjs) speaking each server's own protocol.

// Peer servers.
const (
	PeerHocuspocus = "hocuspocus"
	PeerYWS        = "y-websocket"
)

// PeerWorkload is a number of subscribers and a write rate.
type PeerWorkload struct {
	Subs int     `json:"subs"`
	Rate float64 `json:"rate"`
}

// PeerOptions configure a peer comparison.
type PeerOptions struct {
	Dir       string // app/bench/peers, with node_modules installed
	Node      string // node binary; default "node"
	Servers   []string
	Workloads []PeerWorkload
	Duration  time.Duration
	Rounds    int
	Redis     string
	AppBin    string
	// Nice, when non-zero, is the scheduling priority given to every server
	// and client process of a run (node is single-threaded, the app is not:
	// on a busy machine an even priority keeps the comparison fair).
	Nice int
	Log  io.Writer
	// Service, when set, gives the options of each replica of ours;
	// DataDir and Topic are set per run.
	Service func(profile string) ServiceOptions
	// ProfileDir, when set, gets CPU profiles of the app and its daprd over
	// the writing time of the first round of each server of ours
	// (<server>-<subs>x<rate>-{app,daprd}.pprof). Profiling costs a little
	// CPU: that round's figures include it.
	ProfileDir string
}

// PeerRun is one server on one workload in one round.
type PeerRun struct {
	Server   string             `json:"server"`
	Workload PeerWorkload       `json:"workload"`
	Round    int                `json:"round"`
	Sent     int                `json:"sent"`
	Received int                `json:"received"`
	Missing  int                `json:"missing"`
	P50      float64            `json:"p50_ms"`
	P99      float64            `json:"p99_ms"`
	Bytes    float64            `json:"bytes_per_update"`
	CPU      float64            `json:"cpu_us_per_delivery"`
	Cores    map[string]float64 `json:"cores"` // per server process
	AckP50   float64            `json:"ack_p50_ms,omitempty"`
	WriteCPU map[string]float64 `json:"cpu_us_per_write,omitempty"` // per server process
}

// oursKind splits a server name of ours, e.g. ours-json/local, into the
// driver's client kind and the component profile.
func oursKind(server string) (kind, profile string, ok bool) {
	k, p, ok := strings.Cut(server, "/")
	if !ok || !strings.HasPrefix(k, "ours-") {
		return "", "", false
	}
	return k, p, true
}

// RunPeers runs every server on every workload, Rounds times, interleaved.
func RunPeers(ctx context.Context, o PeerOptions) ([]PeerRun, error) {
	if o.Node == "" {
		o.Node = "node"
	}
	var runs []PeerRun
	for r := range o.Rounds {
		for _, w := range o.Workloads {
			for _, s := range o.Servers {
				run, err := runPeer(ctx, o, s, w, r == 0)
				if err != nil {
					return runs, fmt.Errorf("%s, %d subscribers at %g/s: %w", s, w.Subs, w.Rate, err)
				}
				run.Round = r
				runs = append(runs, run)
				fmt.Fprintf(os.Stderr, "peers round %d: %-18s N=%-5d %4g/s  p50 %6.2f ms  p99 %6.2f ms  %5.1f B/update  %5.1f µs/delivery  missing %d\n",
					r+1, s, w.Subs, w.Rate, run.P50, run.P99, run.Bytes, run.CPU, run.Missing)
			}
		}
	}
	return runs, nil
}

type peerServer struct {
	url, kind, doc string
	procs          map[string]int
	stop           func()
	// pprof: the profilers of the app and its daprd, when profiled.
	pprof map[string]string
}

func startPeer(ctx context.Context, o PeerOptions, server string, profiled bool) (*peerServer, error) {
	port, err := daprrun.FreePort()
	if err != nil {
		return nil, err
	}
	if kind, profile, ok := oursKind(server); ok {
		data, err := os.MkdirTemp("", "autoglm-peers-")
		if err != nil {
			return nil, err
		}
		so := ServiceOptions{Profile: profile, AppBin: o.AppBin, DataDir: data, Redis: o.Redis,
			Topic: "peers-" + strconv.FormatInt(time.Now().UnixNano()%1e12, 36), Log: o.Log}
		if o.Service != nil {
			so = o.Service(profile)
			so.DataDir, so.Topic = data, "peers-"+strconv.FormatInt(time.Now().UnixNano()%1e12, 36)
		}
		var pprof map[string]string
		if profiled {
			app, daprd, err := Profilers(&so)
			if err != nil {
				os.RemoveAll(data)
				return nil, err
			}
			pprof = map[string]string{"app": app, "daprd": daprd}
		}
		// daprd picks some of its ports itself; on a busy machine one may be
		// taken by the time it binds, so try again as the main bench does.
		var svc *Service
		for attempt := 1; ; attempt++ {
			if svc, err = StartService(ctx, so); err == nil || attempt == 3 || ctx.Err() != nil {
				break
			}
		}
		if err != nil {
			os.RemoveAll(data)
			return nil, err
		}
		ps := &peerServer{url: svc.URL, kind: kind, doc: "peers/doc", procs: svc.Procs(),
			stop: func() { svc.Stop(); os.RemoveAll(data) }, pprof: pprof}
		if err := seedPeerDoc(ctx, ps.url, ps.doc); err != nil {
			ps.stop()
			return nil, err
		}
		return ps, nil
	}
	var cmd *exec.Cmd
	switch server {
	case PeerHocuspocus:
		cmd = exec.CommandContext(ctx, o.Node, filepath.Join(o.Dir, "hocuspocus.mjs"))
	case PeerYWS:
		cmd = exec.CommandContext(ctx, o.Node, filepath.Join(o.Dir, "node_modules/@y/websocket-server/src/server.js"))
	default:
		return nil, fmt.Errorf("unknown server %q", server)
	}
	cmd.Env = append(os.Environ(), "HOST=127.0.0.1", "PORT="+strconv.Itoa(port))
	_, out, err := startPiped(cmd, o.Log)
	if err != nil {
		return nil, err
	}
	stop := func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }
	line, err := readLine(bufio.NewReader(out), 30*time.Second)
	if err != nil {
		stop()
		return nil, fmt.Errorf("%s did not start: %w", server, err)
	}
	go func() { _, _ = io.Copy(io.Discard, out) }()
	_ = line
	kind := "hocuspocus"
	if server == PeerYWS {
		kind = "yws"
	}
	return &peerServer{url: "ws://127.0.0.1:" + strconv.Itoa(port), kind: kind, doc: "bench",
		procs: map[string]int{"node": cmd.Process.Pid}, stop: stop}, nil
}

// seedPeerDoc creates the document the Yjs writer creates: fields f00..f99
// of 100 bytes each (peers/driver.mjs, seedValue).
func seedPeerDoc(ctx context.Context, url, doc string) error {
	body := map[string]string{}
	for i := range 100 {
		v := "seed-" + strconv.Itoa(i) + "-"
		body[fmt.Sprintf("f%02d", i)] = v + strings.Repeat("x", 100-len(v))
	}
	b, _ := json.Marshal(body)
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, protocol.DocURL(url, doc), bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.StatusCode/100 != 2 {
		return fmt.Errorf("seed %s: status %d", doc, res.StatusCode)
	}
	return nil
}

// driver is one node process of peers/driver.mjs.
type driver struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Reader
}

func startDriver(ctx context.Context, o PeerOptions, ps *peerServer, args ...string) (*driver, error) {
	cmd := exec.CommandContext(ctx, o.Node, append([]string{filepath.Join(o.Dir, "driver.mjs"), ps.kind, ps.url, ps.doc}, args...)...)
	in, out, err := startPiped(cmd, o.Log)
	if err != nil {
		return nil, err
	}
	return &driver{cmd: cmd, in: in, out: bufio.NewReaderSize(out, 1<<20)}, nil
}

// startPiped starts cmd with pipes to its stdin and from its stdout, and
// its stderr to log.
func startPiped(cmd *exec.Cmd, log io.Writer) (io.WriteCloser, io.ReadCloser, error) {
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, nil, err
	}
	cmd.Stderr = log
	return in, out, cmd.Start()
}

func (d *driver) say(s string) error { _, err := io.WriteString(d.in, s+"\n"); return err }

func (d *driver) result(timeout time.Duration, v any) error {
	line, err := readLine(d.out, timeout)
	if err != nil {
		return err
	}
	return json.Unmarshal([]byte(line), v)
}

func (d *driver) stop() {
	_ = d.say("bye")
	done := make(chan struct{})
	go func() { _ = d.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = d.cmd.Process.Kill()
		<-done
	}
}

func readLine(r *bufio.Reader, timeout time.Duration) (string, error) {
	type res struct {
		s   string
		err error
	}
	ch := make(chan res, 1)
	go func() { s, err := r.ReadString('\n'); ch <- res{s, err} }()
	select {
	case x := <-ch:
		if x.err != nil {
			return "", x.err
		}
		return strings.TrimSpace(x.s), nil
	case <-time.After(timeout):
		return "", fmt.Errorf("no answer in %s", timeout)
	}
}

func runPeer(ctx context.Context, o PeerOptions, server string, w PeerWorkload, first bool) (PeerRun, error) {
	run := PeerRun{Server: server, Workload: w}
	ps, err := startPeer(ctx, o, server, first && o.ProfileDir != "")
	if err != nil {
		return run, err
	}
	defer ps.stop()
	var ready struct{ Ready bool }
	wr, err := startDriver(ctx, o, ps, "writer", strconv.FormatFloat(w.Rate, 'f', -1, 64), strconv.FormatFloat(o.Duration.Seconds(), 'f', -1, 64))
	if err != nil {
		return run, err
	}
	defer wr.stop()
	if err := wr.result(60*time.Second, &ready); err != nil {
		return run, fmt.Errorf("writer: %w", err)
	}
	var subs []*driver
	for i := range 2 {
		n := w.Subs / 2
		if i == 0 {
			n = w.Subs - n
		}
		d, err := startDriver(ctx, o, ps, "subs", strconv.Itoa(n))
		if err != nil {
			return run, err
		}
		defer d.stop()
		subs = append(subs, d)
	}
	if o.Nice != 0 {
		pids := []int{wr.cmd.Process.Pid, subs[0].cmd.Process.Pid, subs[1].cmd.Process.Pid}
		for _, pid := range ps.procs {
			pids = append(pids, pid)
		}
		for _, pid := range pids {
			if err := syscall.Setpriority(syscall.PRIO_PROCESS, pid, o.Nice); err != nil {
				return run, fmt.Errorf("nice %d: %w", o.Nice, err)
			}
		}
	}
	for _, d := range subs {
		if err := d.result(5*time.Minute, &ready); err != nil {
			return run, fmt.Errorf("subscribers: %w", err)
		}
	}
	before := map[string]ProcSample{}
	for name, pid := range ps.procs {
		if before[name], err = ReadProc(pid); err != nil {
			return run, err
		}
	}
	for _, d := range subs {
		_ = d.say("go")
	}
	_ = wr.say("go")
	for name, addr := range ps.pprof {
		path := filepath.Join(o.ProfileDir, fmt.Sprintf("%s-%dx%g-%s.pprof", strings.ReplaceAll(server, "/", "-"), w.Subs, w.Rate, name))
		defer CPUProfile(addr, o.Duration, path)()
	}
	var wres struct {
		Sent int       `json:"sent"`
		Acks []float64 `json:"acks"`
	}
	if err := wr.result(o.Duration+60*time.Second, &wres); err != nil {
		return run, fmt.Errorf("writer: %w", err)
	}
	run.Sent = wres.Sent
	var lat []float64
	var bytesIn float64
	for _, d := range subs {
		_ = d.say(strconv.Itoa(wres.Sent))
	}
	for _, d := range subs {
		var sres struct {
			Lat      []float64 `json:"lat"`
			Bytes    float64   `json:"bytes"`
			Received int       `json:"received"`
			Missing  int       `json:"missing"`
		}
		if err := d.result(60*time.Second, &sres); err != nil {
			return run, fmt.Errorf("subscribers: %w", err)
		}
		lat = append(lat, sres.Lat...)
		bytesIn += sres.Bytes
		run.Received += sres.Received
		run.Missing += sres.Missing
	}
	run.Cores = map[string]float64{}
	run.WriteCPU = map[string]float64{}
	var ticks int64
	deliveries := float64(wres.Sent * w.Subs)
	for name, pid := range ps.procs {
		after, err := ReadProc(pid)
		if err != nil {
			return run, err
		}
		u := Between(before[name], after, 0)
		run.Cores[name] = u.CPUCores
		d := after.CPUTicks - before[name].CPUTicks
		ticks += d
		run.WriteCPU[name] = round3(float64(d) / clockTicks * 1e6 / float64(max(wres.Sent, 1)))
	}
	if deliveries > 0 {
		run.CPU = round3(float64(ticks) / clockTicks * 1e6 / deliveries)
		run.Bytes = round3(bytesIn / deliveries)
	}
	sort.Float64s(lat)
	run.P50, run.P99 = pct(lat, 0.50)/1e3, pct(lat, 0.99)/1e3
	if len(wres.Acks) > 0 {
		slices.Sort(wres.Acks)
		run.AckP50 = pct(wres.Acks, 0.5) / 1e3
	}
	run.P50, run.P99, run.AckP50 = round3(run.P50), round3(run.P99), round3(run.AckP50)
	return run, nil
}

func pct(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(p*float64(len(sorted))))]
}

// PeerSummary is the median over rounds of one server on one workload.
type PeerSummary struct {
	PeerRun
	Rounds int `json:"rounds"`
}

// SummarizePeers takes, per server and workload, the median of each metric
// over the rounds.
func SummarizePeers(runs []PeerRun) []PeerSummary {
	type key struct {
		s string
		w PeerWorkload
	}
	groups := map[key][]PeerRun{}
	var order []key
	for _, r := range runs {
		k := key{r.Server, r.Workload}
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], r)
	}
	var out []PeerSummary
	for _, k := range order {
		g := groups[k]
		med := func(f func(PeerRun) float64) float64 {
			v := make([]float64, len(g))
			for i, r := range g {
				v[i] = f(r)
			}
			slices.Sort(v)
			return v[len(v)/2]
		}
		s := PeerSummary{Rounds: len(g), PeerRun: PeerRun{Server: k.s, Workload: k.w, Round: -1,
			P50: med(func(r PeerRun) float64 { return r.P50 }), P99: med(func(r PeerRun) float64 { return r.P99 }),
			Bytes: med(func(r PeerRun) float64 { return r.Bytes }), CPU: med(func(r PeerRun) float64 { return r.CPU }),
			AckP50: med(func(r PeerRun) float64 { return r.AckP50 }), Cores: map[string]float64{}, WriteCPU: map[string]float64{}}}
		for _, r := range g {
			s.Sent += r.Sent
			s.Received += r.Received
			s.Missing += r.Missing
		}
		for name := range g[0].Cores {
			s.Cores[name] = med(func(r PeerRun) float64 { return r.Cores[name] })
			s.WriteCPU[name] = med(func(r PeerRun) float64 { return r.WriteCPU[name] })
		}
		out = append(out, s)
	}
	return out
}

// PeerTable renders the medians as a Markdown table, one row per workload
// and metric, with ours ÷ the best peer beside each of our figures.
func PeerTable(sum []PeerSummary) string {
	var servers []string
	var loads []PeerWorkload
	get := map[string]map[PeerWorkload]PeerSummary{}
	for _, s := range sum {
		if !slices.Contains(servers, s.Server) {
			servers = append(servers, s.Server)
		}
		if !slices.Contains(loads, s.Workload) {
			loads = append(loads, s.Workload)
		}
		if get[s.Server] == nil {
			get[s.Server] = map[PeerWorkload]PeerSummary{}
		}
		get[s.Server][s.Workload] = s
	}
	var b strings.Builder
	b.WriteString("| N, writes/s | metric |")
	for _, s := range servers {
		b.WriteString(" " + s + " |")
	}
	b.WriteString("\n|---|---|" + strings.Repeat("---|", len(servers)) + "\n")
	metrics := []struct {
		name string
		f    func(PeerSummary) float64
		prec int
	}{
		{"p50 (ms)", func(s PeerSummary) float64 { return s.P50 }, 2},
		{"p99 (ms)", func(s PeerSummary) float64 { return s.P99 }, 1},
		{"bytes per update received", func(s PeerSummary) float64 { return s.Bytes }, 0},
		{"server CPU µs per delivery", func(s PeerSummary) float64 { return s.CPU }, 1},
		{"server CPU µs per write, by process", nil, 0},
	}
	for _, w := range loads {
		for _, m := range metrics {
			fmt.Fprintf(&b, "| %d, %g/s | %s |", w.Subs, w.Rate, m.name)
			best := -1.0
			for _, s := range servers {
				if _, _, ours := oursKind(s); !ours && m.f != nil {
					if x, ok := get[s][w]; ok && (best < 0 || m.f(x) < best) {
						best = m.f(x)
					}
				}
			}
			for _, s := range servers {
				x, ok := get[s][w]
				switch {
				case !ok:
					b.WriteString(" – |")
				case m.f == nil:
					var parts []string
					for _, name := range sortedKeys(x.WriteCPU) {
						parts = append(parts, fmt.Sprintf("%s %.0f", name, x.WriteCPU[name]))
					}
					b.WriteString(" " + strings.Join(parts, ", ") + " |")
				default:
					v := strconv.FormatFloat(m.f(x), 'f', m.prec, 64)
					if _, _, ours := oursKind(s); ours && best > 0 {
						v += fmt.Sprintf(" (%.2f×)", m.f(x)/best)
					}
					b.WriteString(" " + v + " |")
				}
			}
			b.WriteString("\n")
		}
	}
	return b.String()
}

func sortedKeys(m map[string]float64) []string {
	var k []string
	for n := range m {
		k = append(k, n)
	}
	sort.Strings(k)
	return k
}
