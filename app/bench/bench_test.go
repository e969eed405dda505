package bench

import (
	"bytes"
	"image/png"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func msd(ms ...int) []time.Duration {
	out := make([]time.Duration, len(ms))
	for i, m := range ms {
		out[i] = time.Duration(m) * time.Millisecond
	}
	return out
}

func TestPercentile(t *testing.T) {
	// 1..100 ms: nearest rank gives exactly p ms.
	var s []time.Duration
	for i := 100; i >= 1; i-- {
		s = append(s, time.Duration(i)*time.Millisecond)
	}
	got := Summarize(s)
	want := Summary{N: 100, P50: 50, P90: 90, P99: 99, Max: 100, Mean: 50.5}
	if d := cmp.Diff(want, got); d != "" {
		t.Fatalf("summary (-want +got):\n%s", d)
	}
	for _, tc := range []struct {
		samples []time.Duration
		p       float64
		want    time.Duration
	}{
		{msd(7), 50, 7 * time.Millisecond},
		{msd(7), 99, 7 * time.Millisecond},
		{msd(1, 2), 50, 1 * time.Millisecond},
		{msd(1, 2), 51, 2 * time.Millisecond},
		{msd(1, 2, 3, 4), 0, 1 * time.Millisecond},
		{msd(1, 2, 3, 4), 100, 4 * time.Millisecond},
		{nil, 50, 0},
	} {
		if got := Percentile(tc.samples, tc.p); got != tc.want {
			t.Errorf("Percentile(%v, %v) = %v, want %v", tc.samples, tc.p, got, tc.want)
		}
	}
	if (Summarize(nil) != Summary{}) {
		t.Error("empty sample should summarise to zero")
	}
}

func TestCDF(t *testing.T) {
	s := msd(1, 2, 3, 4, 5, 6, 7, 8, 9, 10)
	got := CDF(s, 5)
	want := []Point{{1, .1}, {3, .3}, {5, .5}, {7, .7}, {9, .9}, {10, 1}}
	if d := cmp.Diff(want, got); d != "" {
		t.Fatalf("CDF (-want +got):\n%s", d)
	}
	for i := 1; i < len(got); i++ {
		if got[i].X < got[i-1].X || got[i].Y <= got[i-1].Y {
			t.Fatalf("CDF not monotonic at %d: %v", i, got)
		}
	}
}

func TestStreamDelta(t *testing.T) {
	now := time.Unix(0, 1000)
	t.Run("OK", func(t *testing.T) {
		s := Stream{Delta: true}
		s.Start(5)
		for v := int64(6); v <= 9; v++ {
			s.Receive(v, now)
		}
		s.Finish(9)
		if s.Missed != 0 || s.Dup != 0 || s.Last != 9 || len(s.Arrivals) != 4 {
			t.Fatalf("%+v", s)
		}
	})
	t.Run("ErrDuplicate", func(t *testing.T) {
		s := Stream{Delta: true}
		s.Start(5)
		s.Receive(6, now)
		s.Receive(6, now)
		s.Receive(5, now) // behind the start
		s.Receive(7, now)
		s.Finish(7)
		if s.Dup != 2 || s.Missed != 0 {
			t.Fatalf("dup %d missed %d, want 2 and 0", s.Dup, s.Missed)
		}
	})
	t.Run("ErrGap", func(t *testing.T) {
		s := Stream{Delta: true}
		s.Receive(1, now)
		s.Receive(4, now) // 2 and 3 skipped
		s.Finish(6)       // 5 and 6 never came
		if s.Missed != 4 || s.Dup != 0 {
			t.Fatalf("missed %d dup %d, want 4 and 0", s.Missed, s.Dup)
		}
	})
}

func TestStreamSnapshots(t *testing.T) {
	s := Stream{} // full push / polling: a snapshot covers the versions before it
	s.Start(2)
	s.Receive(5, time.Unix(0, 500))
	s.Receive(6, time.Unix(0, 600))
	s.Finish(6)
	if s.Missed != 0 || s.Dup != 0 {
		t.Fatalf("missed %d dup %d, want 0", s.Missed, s.Dup)
	}
	sent := map[int64]int64{3: 100, 4: 200, 5: 300, 6: 590}
	got := s.Latencies(nil, func(v int64) (int64, bool) { at, ok := sent[v]; return at, ok })
	// Versions 3, 4 and 5 became visible with the snapshot at 500 ns.
	want := []time.Duration{400, 300, 200, 10}
	if d := cmp.Diff(want, got); d != "" {
		t.Fatalf("latencies (-want +got):\n%s", d)
	}
	s.Receive(6, time.Unix(0, 700))
	if s.Dup != 1 {
		t.Fatalf("a repeated snapshot is a duplicate, got dup %d", s.Dup)
	}
	s.Finish(8)
	if s.Missed != 2 {
		t.Fatalf("not reaching the final version misses the rest, got %d", s.Missed)
	}
}

func TestCounter(t *testing.T) {
	var c Counter
	a, b := net.Pipe()
	ca := c.Wrap(a)
	go func() {
		buf := make([]byte, 5)
		_, _ = io.ReadFull(b, buf)
		_, _ = b.Write([]byte("hello, world"))
		b.Close()
	}()
	if _, err := ca.Write([]byte("12345")); err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(ca)
	if string(got) != "hello, world" {
		t.Fatalf("read %q", got)
	}
	before := Bytes{Read: 2, Written: 1}
	if d := cmp.Diff(Bytes{Read: 10, Written: 4}, c.Load().Sub(before)); d != "" {
		t.Fatalf("bytes (-want +got):\n%s", d)
	}
}

func TestParseProc(t *testing.T) {
	// A command name with spaces and parentheses must not shift the fields.
	stat := "4242 (auto glm) (x)) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 12 0 100 1000000 2500 18446744073709551615"
	ticks, err := parseStatTicks(stat)
	if err != nil || ticks != 325 {
		t.Fatalf("ticks %d, %v; want 325", ticks, err)
	}
	if _, err := parseStatTicks("garbage"); err == nil {
		t.Fatal("want an error for a malformed stat line")
	}
	if got := parseRSS("Name:\tx\nVmHWM:\t 9999 kB\nVmRSS:\t  2048 kB\n"); got != 2048<<10 {
		t.Fatalf("rss %d", got)
	}
	a := ProcSample{At: time.Unix(0, 0), CPUTicks: 100}
	b := ProcSample{At: time.Unix(2, 0), CPUTicks: 250, RSS: 64 << 20}
	if d := cmp.Diff(Usage{CPUCores: 0.75, CPUSeconds: 1.5, RSSMiB: 64, PeakMiB: 80}, Between(a, b, 80<<20)); d != "" {
		t.Fatalf("usage (-want +got):\n%s", d)
	}
}

func TestReport(t *testing.T) {
	r := &Result{Profile: "local", Latency: []*LatencyResult{
		{Mode: ModeDelta, Encoding: "json", Accepted: 10, Propagation: Summary{P50: 3, P99: 20}, SubDown: 200},
		{Mode: ModeFull, Encoding: "json", Accepted: 10, Propagation: Summary{P50: 9, P99: 50}, SubDown: 10000, Dup: 1},
	}, Throughput: []*ThroughputResult{{Name: "distinct", Docs: 100, PerSec: 6000}, {Name: "hot", Docs: 1, PerSec: 900}}}
	r.Evaluate()
	met := map[string]bool{}
	for _, c := range r.Targets {
		met[c.Name] = c.Met
	}
	for name, want := range map[string]bool{
		"propagation p50 (delta, JSON)":                       true,
		"bytes per update per subscriber (JSON)":              true,
		"deliveries missed/duplicated (full, json, all runs)": false,
		"accepted writes/s on one hot document":               false,
		"accepted writes/s over 100 documents":                true,
		"bytes per update per subscriber (binary)":            false, // not measured
	} {
		if got, ok := met[name]; !ok || got != want {
			t.Errorf("target %q met = %v (present %v), want %v", name, got, ok, want)
		}
	}
	if f := r.Failed(); len(f) != 1 || !strings.Contains(f[0], "1 duplicated") {
		t.Errorf("Failed() = %q", f)
	}
	md := r.Markdown()
	for _, want := range []string{"| delta | json |", "WebSocket full push", "3.0×", "### Targets"} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
}

// With repeated runs the tables quote the median run of each mode.
func TestMedianRun(t *testing.T) {
	r := &Result{}
	for i, p50 := range []float64{9, 3, 5} {
		r.Latency = append(r.Latency, &LatencyResult{Run: i + 1, Mode: ModeDelta, Encoding: "json", Propagation: Summary{P50: p50}})
	}
	if got := r.Find(ModeDelta, "json"); got.Run != 3 {
		t.Fatalf("median run %d (p50 %v), want run 3 (p50 5)", got.Run, got.Propagation.P50)
	}
	if r.Find(ModePoll, "") != nil {
		t.Fatal("found a mode that did not run")
	}
	r.Throughput = []*ThroughputResult{{Name: "hot", Run: 1, PerSec: 10}, {Name: "hot", Run: 2, PerSec: 30}}
	if got := r.findTP("hot"); got.Run != 1 {
		t.Fatalf("median of two is the lower: got run %d", got.Run)
	}
}

func TestPlotCDF(t *testing.T) {
	var buf bytes.Buffer
	err := PlotCDF(&buf, "test", []Series{
		{Name: "delta", Points: CDF(msd(1, 2, 3, 4, 5), 10)},
		{Name: "poll", Points: CDF(msd(100, 400, 900), 10)},
	})
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if b := img.Bounds(); b.Dx() != 900 || b.Dy() != 520 {
		t.Fatalf("size %v", b)
	}
}

func TestParseCPULine(t *testing.T) {
	// user nice system idle iowait irq softirq steal guest guest_nice
	busy, err := parseCPULine("cpu  100 5 50 1000 40 3 2 1 77 0")
	if err != nil || busy != 161 {
		t.Fatalf("busy %d, %v; want 161 (idle, iowait and guest left out)", busy, err)
	}
	if _, err := parseCPULine("intr 1 2 3"); err == nil {
		t.Fatal("want an error for a line that is not the cpu total")
	}
	if _, err := ReadMachine(); err != nil {
		t.Fatal(err)
	}
}
