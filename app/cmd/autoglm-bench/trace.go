package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/open-autoglm/autoglm/app/bench"
	"github.com/open-autoglm/autoglm/app/internal/otlpsink"
)

// traceRound is one delta run of the tracing comparison.
type traceRound struct {
	Round   int                  `json:"round"`
	Tracing string               `json:"tracing"` // off, on, or baseline (another build, untraced)
	Result  *bench.LatencyResult `json:"result"`
	// AppMicros and DaprdMicros are CPU µs per delivered (change,
	// subscriber) pair.
	AppMicros   float64 `json:"app_us_per_delivery"`
	DaprdMicros float64 `json:"daprd_us_per_delivery"`
}

// runTraceOverhead measures what tracing costs the fan-out: two replicas
// run side by side, one with tracing unset and one exporting every span
// (100% sampling, daprd too) to an OTLP receiver in this process, and the
// delta rounds alternate between them. It reports the app's CPU per
// delivery of each round and the medians. With o.baselineApp a third
// replica runs that binary (an earlier build) untraced, to show what the
// instrumentation costs when tracing is unset.
func runTraceOverhead(ctx context.Context, o options, profile string) error {
	outDir := filepath.Join(o.out, profile, "trace-overhead")
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return err
	}
	sink, err := otlpsink.Start(true)
	if err != nil {
		return err
	}
	defer sink.Stop()
	logf, err := os.Create(filepath.Join(outDir, "service.log"))
	if err != nil {
		return err
	}
	defer logf.Close()
	type side struct {
		name string
		bin  string
		env  []string
		t    bench.Target
		svc  *bench.Service
	}
	sides := []*side{
		{name: "off", bin: o.appBin},
		{name: "on", bin: o.appBin, env: []string{"OTEL_EXPORTER_OTLP_ENDPOINT=" + sink.Endpoint(), "OTEL_EXPORTER_OTLP_PROTOCOL=grpc",
			"OTEL_TRACES_SAMPLER=always_on"}},
	}
	if o.baselineApp != "" {
		sides = append([]*side{{name: "baseline", bin: o.baselineApp}}, sides...)
	}
	for i, s := range sides {
		data, err := os.MkdirTemp("", "autoglm-bench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(data)
		coll := "b" + strconv.FormatInt(time.Now().UnixNano()%1e12, 36) + strconv.Itoa(i)
		s.t = bench.Target{Collection: coll, Docs: o.docs, DocBytes: o.docBytes, Fields: o.fields}
		so := bench.ServiceOptions{Profile: profile, AppBin: s.bin, DataDir: data, Redis: o.redis,
			Topic: "bench-" + coll, Log: io.Writer(logf), Env: s.env}
		fmt.Printf("[%s] starting app + daprd, tracing %s\n", profile, s.name)
		if s.svc, err = bench.StartService(ctx, so); err != nil {
			return fmt.Errorf("tracing %s: %w (log: %s)", s.name, err, logf.Name())
		}
		defer s.svc.Stop()
		svc := s.svc
		s.t.URL = svc.URL
		s.t.Procs = svc.Procs
		if err := s.t.Seed(ctx); err != nil {
			return fmt.Errorf("seed: %w", err)
		}
	}
	cfg := bench.LatencyConfig{Mode: bench.ModeDelta, Subscribers: o.subs, Writers: o.writers, Rate: o.rate,
		Duration: o.duration, Drain: o.drain}
	if o.warmup > 0 {
		for _, s := range sides {
			w := cfg
			w.Duration = o.warmup
			if _, err := bench.RunLatency(ctx, s.t, w); err != nil {
				return fmt.Errorf("warm-up: %w", err)
			}
		}
	}
	var rounds []traceRound
	for round := 1; round <= o.repeat; round++ {
		// Rotate who goes first, so no side always runs after the same one.
		k := (round - 1) % len(sides)
		order := append(slices.Clone(sides[k:]), sides[:k]...)
		for _, s := range order {
			l, err := bench.RunLatency(ctx, s.t, cfg)
			if err != nil {
				return err
			}
			l.Run = round
			r := traceRound{Round: round, Tracing: s.name, Result: l}
			if l.Visible > 0 {
				r.AppMicros = l.Usage["app"].CPUSeconds / float64(l.Visible) * 1e6
				r.DaprdMicros = l.Usage["daprd"].CPUSeconds / float64(l.Visible) * 1e6
			}
			fmt.Printf("    round %d tracing %-8s: %d deliveries, app %.2f µs/delivery, daprd %.2f µs/delivery, propagation p50 %.2f ms, %d missed\n",
				round, s.name, l.Visible, r.AppMicros, r.DaprdMicros, l.Propagation.P50, l.Missed)
			rounds = append(rounds, r)
		}
	}
	md := traceMarkdown(rounds, cfg, profile, sink.Count())
	fmt.Println(md)
	b, err := json.MarshalIndent(rounds, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(outDir, "result.json"), b, 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(outDir, "result.md"), []byte(md), 0o644)
}

func traceMarkdown(rounds []traceRound, cfg bench.LatencyConfig, profile string, spans int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "### Tracing overhead, profile %s: delta sync, %d subscribers, %d writers, %.0f writes/s, %s per round\n\n",
		profile, cfg.Subscribers, cfg.Writers, cfg.Rate, cfg.Duration)
	b.WriteString("| round | tracing | deliveries | app µs/delivery | daprd µs/delivery | propagation p50 ms | others (cores) |\n")
	b.WriteString("|---|---|---|---|---|---|---|\n")
	med := map[string][3]float64{}
	for _, name := range []string{"baseline", "off", "on"} {
		var app, daprd, p50 []float64
		for _, r := range rounds {
			if r.Tracing == name {
				app = append(app, r.AppMicros)
				daprd = append(daprd, r.DaprdMicros)
				p50 = append(p50, r.Result.Propagation.P50)
			}
		}
		med[name] = [3]float64{medianOf(app), medianOf(daprd), medianOf(p50)}
	}
	traced := int64(0)
	for _, r := range rounds {
		fmt.Fprintf(&b, "| %d | %s | %d | %.2f | %.2f | %.2f | %.2f |\n", r.Round, r.Tracing, r.Result.Visible,
			r.AppMicros, r.DaprdMicros, r.Result.Propagation.P50, r.Result.Usage["others"].CPUCores)
		if r.Tracing == "on" {
			traced += r.Result.Accepted
		}
	}
	off, on := med["off"], med["on"]
	fmt.Fprintf(&b, "\nMedians: app %.2f µs/delivery untraced, %.2f traced (%+.0f %%); daprd %.2f and %.2f (%+.0f %%); propagation p50 %.2f and %.2f ms.\n",
		off[0], on[0], pct(on[0], off[0]), off[1], on[1], pct(on[1], off[1]), off[2], on[2])
	if base, ok := med["baseline"]; ok && base[0] > 0 {
		fmt.Fprintf(&b, "Baseline build (untraced): app %.2f µs/delivery; this build untraced %+.0f %% against it.\n", base[0], pct(off[0], base[0]))
	}
	// Rounds drift with the machine's other load; comparing the sides
	// within each round (run back to back) and taking the median of those
	// ratios is less sensitive to it than comparing medians.
	fmt.Fprintf(&b, "Median of per-round ratios: traced/untraced app %+.0f %%", pairedPct(rounds, "on", "off"))
	if _, ok := med["baseline"]; ok {
		fmt.Fprintf(&b, ", untraced/baseline app %+.0f %%", pairedPct(rounds, "off", "baseline"))
	}
	b.WriteString(".\n")
	fmt.Fprintf(&b, "The receiver got %d spans (app and daprd, warm-up included) for %d writes in the measured traced rounds.\n", spans, traced)
	return b.String()
}

// pairedPct is the median over rounds of a's app CPU per delivery against
// b's in the same round, in percent.
func pairedPct(rounds []traceRound, a, b string) float64 {
	by := map[int]map[string]float64{}
	for _, r := range rounds {
		if by[r.Round] == nil {
			by[r.Round] = map[string]float64{}
		}
		by[r.Round][r.Tracing] = r.AppMicros
	}
	var ratios []float64
	for _, m := range by {
		if m[a] > 0 && m[b] > 0 {
			ratios = append(ratios, pct(m[a], m[b]))
		}
	}
	return medianOf(ratios)
}

func pct(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return (a/b - 1) * 100
}

func medianOf(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	xs = slices.Clone(xs)
	slices.Sort(xs)
	if len(xs)%2 == 1 {
		return xs[len(xs)/2]
	}
	return (xs[len(xs)/2-1] + xs[len(xs)/2]) / 2
}
