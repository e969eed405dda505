// Command autoglm-bench is the load generator behind `make bench`: it starts
// the service (app + daprd, on the local or redis profile) or targets a
// running one, and measures delta sync against the full-push and polling
// baselines on the same documents, write throughput and idle-connection
// memory. It writes result.json, result.md and a latency CDF plot per
// profile, and exits non-zero when the service cannot be started or any
// delivery was missed or duplicated.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/open-autoglm/autoglm/app/bench"
	"github.com/open-autoglm/autoglm/app/internal/cmdmain"
	"github.com/open-autoglm/autoglm/app/protocol"
)

func main() { cmdmain.Run("autoglm-bench", run) }

type options struct {
	profiles     []string
	url          string
	out          string
	redis        string
	appBin       string
	baselineApp  string
	subs         int
	docs         int
	docBytes     int
	fields       int
	writers      int
	rate         float64
	duration     time.Duration
	modes        []string
	binary       string
	pollInterval time.Duration
	tpDocs       int
	tpConns      int
	tpWindow     int
	tpDuration   time.Duration
	idle         int
	repeat       int
	sqliteSync   string
	nice         int
	drain        time.Duration
	warmup       time.Duration
	pprof        bool
	enforce      bool
	verbose      bool
	command      string
	peers        peerFlags
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("autoglm-bench", flag.ContinueOnError)
	var o options
	profiles := fs.String("profile", "local", "component profiles to start, comma-separated: local, redis")
	fs.StringVar(&o.url, "url", "", "benchmark a running service at this base URL instead of starting one (no CPU/RSS figures)")
	fs.StringVar(&o.out, "out", "bench/out", "output directory")
	fs.StringVar(&o.redis, "redis", "127.0.0.1:6379", "Redis address for the redis profile")
	fs.StringVar(&o.appBin, "app", "", "service binary (default bin/autoglm)")
	fs.IntVar(&o.subs, "subs", 1000, "subscribers")
	fs.IntVar(&o.docs, "docs", 100, "documents")
	fs.IntVar(&o.docBytes, "doc-bytes", 10240, "bytes of data per document")
	fs.IntVar(&o.fields, "fields", 100, "fields per document")
	fs.IntVar(&o.writers, "writers", 10, "writer connections")
	fs.Float64Var(&o.rate, "rate", 500, "single-field writes per second (all writers)")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "writing time per mode and round")
	modes := fs.String("modes", "delta,full,poll", "delivery modes to measure: delta, full, poll")
	fs.StringVar(&o.binary, "binary", "auto", "also measure delta sync over the binary subprotocol: auto (if the server offers it), on, off")
	fs.DurationVar(&o.pollInterval, "poll-interval", time.Second, "polling baseline: GET interval per client")
	fs.IntVar(&o.tpDocs, "tp-docs", 100, "throughput run: distinct documents (0: skip throughput)")
	fs.IntVar(&o.tpConns, "tp-conns", 32, "throughput run: connections (each is held to AUTOGLM_CONN_RATE messages per second, 500 by default, so fewer connections measure that limit rather than the server)")
	fs.IntVar(&o.tpWindow, "tp-window", 32, "throughput run: ops in flight per connection")
	fs.DurationVar(&o.tpDuration, "tp-duration", 10*time.Second, "throughput run: duration of each run")
	fs.IntVar(&o.idle, "idle", 10000, "idle WebSocket connections to open (0: skip)")
	fs.StringVar(&o.sqliteSync, "sqlite-sync", "", "local profile: set SQLite PRAGMA synchronous (e.g. NORMAL) to measure the per-commit fsync; empty: as shipped")
	fs.IntVar(&o.nice, "nice", 0, "scheduling priority (nice value, e.g. -10; negative needs root) for the app, daprd and the load generator, to shield the measurement from other work on a shared machine; 0: unchanged")
	fs.IntVar(&o.repeat, "repeat", 5, "rounds of the latency and throughput runs, interleaved; tables quote the median round")
	fs.DurationVar(&o.warmup, "warmup", 3*time.Second, "unrecorded delta run before measuring (0: none)")
	fs.BoolVar(&o.pprof, "pprof", false, "run the app with AUTOGLM_PPROF (and daprd with its profiler) and save CPU profiles of the first delta and throughput runs, a heap profile with the idle connections, and CPU profiles of the first peer-comparison round of each server of ours (bench/out/peers)")
	fs.BoolVar(&o.enforce, "enforce", false, "exit non-zero when a performance target is missed")
	fs.BoolVar(&o.verbose, "v", false, "show the service's log")
	render := fs.String("render", "", "re-render result.md and cdf.png from the result.json in this directory, then exit")
	fs.StringVar(&o.baselineApp, "baseline-app", "", "with -trace-overhead: also run this service binary (an earlier build) untraced, side by side")
	traceOverhead := fs.Bool("trace-overhead", false, "instead of the usual runs: delta sync on two replicas side by side, tracing unset and tracing every span to an in-process OTLP receiver, rounds alternating; reports the app's CPU per delivery of each (docs/observability.md)")
	o.peers.register(fs)
	smoke := fs.Bool("smoke", false, "a few seconds with small numbers: checks the bench and exactly-once delivery, not performance")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *render != "" {
		b, err := os.ReadFile(filepath.Join(*render, "result.json"))
		if err != nil {
			return err
		}
		var res bench.Result
		if err := json.Unmarshal(b, &res); err != nil {
			return err
		}
		res.Evaluate()
		return write(*render, &res)
	}
	if *smoke {
		o.subs, o.docs, o.writers, o.rate, o.duration = 20, 4, 2, 40, 2*time.Second
		o.tpDocs, o.tpConns, o.tpWindow, o.tpDuration, o.idle = 4, 2, 8, time.Second, 50
		o.docBytes, o.fields = 2048, 20
		o.pollInterval = 200 * time.Millisecond
		o.repeat, o.warmup = 1, 0
		// A busy CI machine may be slow; only correctness is judged here.
		o.drain = time.Minute
	}
	o.profiles = split(*profiles)
	o.modes = split(*modes)
	o.command = "autoglm-bench " + strings.Join(args, " ")
	if o.rate <= 0 || o.repeat <= 0 || o.subs <= 0 || o.docs <= 0 || o.writers <= 0 || o.fields <= 0 {
		return errors.New("rate, subs, docs, writers and fields must be positive")
	}
	if lim, err := bench.RaiseFileLimit(); err == nil {
		if need := uint64(o.idle + o.subs + 256); lim < need {
			fmt.Fprintf(os.Stderr, "warning: open-files limit %d is below the %d connections asked for\n", lim, need)
		}
	}
	if o.url != "" {
		o.profiles = []string{"external"}
	}
	if *traceOverhead {
		if o.url != "" {
			return errors.New("-trace-overhead starts its own replicas: drop -url")
		}
		for _, p := range o.profiles {
			if err := runTraceOverhead(ctx, o, p); err != nil {
				return fmt.Errorf("profile %s: %w", p, err)
			}
		}
		return nil
	}
	var failures []string
	if o.peers.only {
		o.profiles = nil
	}
	for _, p := range o.profiles {
		res, err := runProfile(ctx, o, p)
		if err != nil {
			return fmt.Errorf("profile %s: %w", p, err)
		}
		for _, f := range res.Failed() {
			failures = append(failures, p+" "+f)
		}
		if o.enforce {
			for _, c := range res.Targets {
				if !c.Met {
					failures = append(failures, fmt.Sprintf("%s target %q: want %s, got %s", p, c.Name, c.Want, c.Got))
				}
			}
		}
	}
	if o.peers.dir != "" {
		fails, err := runPeers(ctx, o)
		if err != nil {
			return fmt.Errorf("peers: %w", err)
		}
		failures = append(failures, fails...)
	}
	if len(failures) > 0 {
		return fmt.Errorf("FAILED:\n  %s", strings.Join(failures, "\n  "))
	}
	return nil
}

func runProfile(ctx context.Context, o options, profile string) (*bench.Result, error) {
	outDir := filepath.Join(o.out, profile)
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return nil, err
	}
	res := &bench.Result{Started: time.Now().UTC().Format(time.RFC3339), Profile: profile, Machine: machine(), Command: o.command}
	t := bench.Target{URL: o.url, Collection: "b" + strconv.FormatInt(time.Now().UnixNano()%1e12, 36),
		Docs: o.docs, DocBytes: o.docBytes, Fields: o.fields}
	var pprofAddr, daprdPprof string
	if o.url == "" {
		data, err := os.MkdirTemp("", "autoglm-bench-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(data)
		logf, err := os.Create(filepath.Join(outDir, "service.log"))
		if err != nil {
			return nil, err
		}
		defer logf.Close()
		var logw io.Writer = logf
		if o.verbose {
			logw = io.MultiWriter(logf, os.Stderr)
		}
		so := bench.ServiceOptions{Profile: profile, AppBin: o.appBin, DataDir: data, Redis: o.redis,
			Topic: "bench-" + t.Collection, Log: logw, SQLiteSync: o.sqliteSync}
		if o.pprof {
			var err error
			if pprofAddr, daprdPprof, err = bench.Profilers(&so); err != nil {
				return nil, err
			}
		}
		fmt.Printf("[%s] starting app + daprd\n", profile)
		// Ports are picked free a moment before the processes bind them, so
		// another process can take one in between: try again on failure.
		var svc *bench.Service
		for attempt := 1; ; attempt++ {
			if svc, err = bench.StartService(ctx, so); err == nil || attempt == 3 || ctx.Err() != nil {
				break
			}
			fmt.Fprintf(os.Stderr, "[%s] start attempt %d failed: %v; retrying\n", profile, attempt, err)
		}
		if err != nil {
			return nil, fmt.Errorf("start the service: %w (log: %s)", err, logf.Name())
		}
		defer svc.Stop()
		t.URL = svc.URL
		if o.nice != 0 {
			procs := svc.Procs()
			procs["bench"] = os.Getpid()
			for name, pid := range procs {
				if err := renice(pid, o.nice); err != nil {
					return nil, fmt.Errorf("nice %s: %w", name, err)
				}
			}
			// With autogroup scheduling (sched_autogroup_enabled), nice only
			// ranks threads within their session's group; the group's own
			// nice ranks it against the other sessions on the machine.
			if _, err := os.Stat("/proc/self/autogroup"); err == nil {
				if err := os.WriteFile("/proc/self/autogroup", []byte(strconv.Itoa(o.nice)), 0o644); err != nil {
					return nil, fmt.Errorf("nice autogroup: %w", err)
				}
			}
			res.Notes = append(res.Notes, fmt.Sprintf("The app, daprd and the load generator ran at nice %d.", o.nice))
		}
		redis := 0
		if profile == "redis" {
			redis = bench.FindProc("redis-server")
		}
		t.Procs = func() map[string]int {
			m := svc.Procs()
			m["bench"] = os.Getpid()
			if redis > 0 {
				m["redis"] = redis
			}
			return m
		}
	}
	res.Target = t.URL
	fmt.Printf("[%s] seeding %d documents of %d bytes at %s\n", profile, t.Docs, t.DocBytes, t.URL)
	if err := t.Seed(ctx); err != nil {
		return nil, fmt.Errorf("seed: %w", err)
	}

	binary := o.binary == "on"
	if o.binary == "auto" {
		binary = offersBinary(ctx, t.URL)
		if !binary {
			res.Notes = append(res.Notes, "The server did not offer the binary subprotocol autoglm.bin.v1: JSON only.")
		}
	}
	type phase struct {
		mode string
		bin  bool
	}
	var phases []phase
	for _, m := range o.modes {
		phases = append(phases, phase{m, false})
		if m == bench.ModeDelta && binary {
			phases = append(phases, phase{m, true})
		}
	}
	if o.warmup > 0 && len(phases) > 0 {
		fmt.Printf("[%s] warm-up: %s of delta sync, not recorded\n", profile, o.warmup)
		if _, err := bench.RunLatency(ctx, t, bench.LatencyConfig{Mode: bench.ModeDelta, Subscribers: o.subs,
			Writers: o.writers, Rate: o.rate, Duration: o.warmup}); err != nil {
			return nil, fmt.Errorf("warm-up: %w", err)
		}
	}
	for round := 1; round <= o.repeat; round++ {
		for _, ph := range phases {
			fmt.Printf("[%s] round %d, %s%s: %d subscribers, %d writers, %.0f writes/s for %s\n", profile, round, ph.mode,
				map[bool]string{true: " (binary)"}[ph.bin], o.subs, o.writers, o.rate, o.duration)
			var prof func()
			if pprofAddr != "" && round == 1 && ph.mode == bench.ModeDelta && !ph.bin {
				p1 := bench.CPUProfile(pprofAddr, o.duration, filepath.Join(outDir, "cpu-delta.pprof"))
				p2 := bench.CPUProfile(daprdPprof, o.duration, filepath.Join(outDir, "daprd-cpu-delta.pprof"))
				prof = func() { p1(); p2() }
			}
			l, err := bench.RunLatency(ctx, t, bench.LatencyConfig{Mode: ph.mode, Binary: ph.bin, Subscribers: o.subs,
				Writers: o.writers, Rate: o.rate, Duration: o.duration, PollInterval: o.pollInterval, Drain: o.drain})
			if prof != nil {
				prof()
			}
			if err != nil {
				return nil, fmt.Errorf("%s: %w", ph.mode, err)
			}
			l.Run = round
			fmt.Printf("    propagation p50 %.2f p99 %.2f ms, ack p50 %.2f ms, %.0f B/update/sub, %d missed, %d dup\n",
				l.Propagation.P50, l.Propagation.P99, l.Ack.P50, l.SubDown, l.Missed, l.Dup)
			res.Latency = append(res.Latency, l)
		}
	}
	if o.tpDocs > 0 {
		for round := 1; round <= o.repeat; round++ {
			for _, c := range []bench.ThroughputConfig{
				{Name: "distinct", Docs: min(o.tpDocs, t.Docs), Conns: o.tpConns, Window: o.tpWindow, Duration: o.tpDuration},
				{Name: "hot", Docs: 1, Conns: o.tpConns, Window: o.tpWindow, Duration: o.tpDuration},
			} {
				fmt.Printf("[%s] round %d, throughput %s: %d documents, %d connections × %d in flight, %s\n", profile, round, c.Name, c.Docs, c.Conns, c.Window, c.Duration)
				var prof func()
				if pprofAddr != "" && round == 1 {
					prof = bench.CPUProfile(pprofAddr, c.Duration, filepath.Join(outDir, "cpu-"+c.Name+".pprof"))
				}
				r, err := bench.RunThroughput(ctx, t, c)
				if prof != nil {
					prof()
				}
				if err != nil {
					return nil, err
				}
				r.Run = round
				fmt.Printf("    %.0f accepted/s, %d rejected\n", r.PerSec, r.Rejected)
				res.Throughput = append(res.Throughput, r)
			}
		}
	}
	if o.idle > 0 {
		fmt.Printf("[%s] idle: opening %d WebSocket sessions\n", profile, o.idle)
		r, err := bench.RunIdle(ctx, t, o.idle, false, 3*time.Second)
		if r != nil {
			res.Idle = r
			if pprofAddr != "" && err == nil {
				bench.FetchProfile("http://"+pprofAddr+"/debug/pprof/heap", filepath.Join(outDir, "heap-idle.pprof"))
			}
			fmt.Printf("    %d open, app RSS %.0f MiB (%.1f KiB per connection)\n", r.Opened, r.AppRSS, r.PerConnKiB)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "idle connections: %v\n", err)
		}
	}
	res.Evaluate()
	if err := write(outDir, res); err != nil {
		return nil, err
	}
	fmt.Println(res.Markdown())
	fmt.Printf("[%s] results in %s\n", profile, outDir)
	return res, nil
}

func write(dir string, res *bench.Result) error {
	b, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "result.json"), b, 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "result.md"), []byte(res.Markdown()), 0o644); err != nil {
		return err
	}
	var series []bench.Series
	seen := map[string]bool{}
	for _, l := range res.Latency {
		key := l.Mode + " (" + l.Encoding + ")"
		if seen[key] {
			continue
		}
		seen[key] = true
		// The median round of the mode, as in the tables.
		l = res.Find(l.Mode, l.Encoding)
		name := key
		series = append(series, bench.Series{Name: fmt.Sprintf("%s p50 %.1f ms", name, l.Propagation.P50), Points: l.CDF})
	}
	f, err := os.Create(filepath.Join(dir, "cdf.png"))
	if err != nil {
		return err
	}
	defer f.Close()
	title := fmt.Sprintf("Open-AutoGLM propagation CDF, profile %s: %d subscribers, %d docs, %.0f writes/s",
		res.Profile, firstSubs(res), firstDocs(res), firstRate(res))
	return bench.PlotCDF(f, title, series)
}

func firstSubs(r *bench.Result) int {
	if len(r.Latency) > 0 {
		return r.Latency[0].Subscribers
	}
	return 0
}

func firstDocs(r *bench.Result) int {
	if len(r.Latency) > 0 {
		return r.Latency[0].Docs
	}
	return 0
}

func firstRate(r *bench.Result) float64 {
	if len(r.Latency) > 0 {
		return r.Latency[0].Rate
	}
	return 0
}

// offersBinary reports whether the server accepts the binary subprotocol.
func offersBinary(ctx context.Context, url string) bool {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url+protocol.PathSync, nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Sec-WebSocket-Version", "13")
	req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	req.Header.Set("Sec-WebSocket-Protocol", protocol.SubprotocolBinary)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	defer res.Body.Close()
	return res.StatusCode == http.StatusSwitchingProtocols && res.Header.Get("Sec-WebSocket-Protocol") == protocol.SubprotocolBinary
}

func machine() string {
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		if line, _, ok := strings.Cut(string(b), "\n"); ok {
			f := strings.Fields(line)
			if len(f) >= 2 {
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				mem = fmt.Sprintf(", %.0f GiB", float64(kb)/(1<<20))
			}
		}
	}
	model := ""
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				model = ", " + strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	return fmt.Sprintf("%d cores%s%s, %s/%s, %s, loopback", runtime.NumCPU(), model, mem, runtime.GOOS, runtime.GOARCH, runtime.Version())
}

// renice sets the nice value of every thread of a process (on Linux it is
// per thread; threads created later inherit it from their creator).
func renice(pid, nice int) error {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return err
	}
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		if err := syscall.Setpriority(syscall.PRIO_PROCESS, tid, nice); err != nil {
			return err
		}
	}
	return nil
}

func split(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
