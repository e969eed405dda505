package bench

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// Result is everything one bench run measured.
type Result struct {
	Started    string              `json:"started"`
	Profile    string              `json:"profile"`
	Target     string              `json:"target"`
	Machine    string              `json:"machine"`
	Command    string              `json:"command"`
	Latency    []*LatencyResult    `json:"latency"`
	Throughput []*ThroughputResult `json:"throughput,omitempty"`
	Idle       *IdleResult         `json:"idle,omitempty"`
	Targets    []Check             `json:"targets,omitempty"`
	Notes      []string            `json:"notes,omitempty"`
}

// Check is one performance target and whether the run met it.
type Check struct {
	Name  string `json:"name"`
	Want  string `json:"want"`
	Got   string `json:"got"`
	Met   bool   `json:"met"`
	Known bool   `json:"measured"`
}

// Seed is the comparison table the project started from (per operation).
var Seed = []struct {
	Name    string
	Mode    string
	Latency float64 // ms
	KB      float64
}{
	{"polling", ModePoll, 800, 120},
	{"WebSocket full push", ModeFull, 120, 95},
	{"Open-AutoGLM (seed claim)", ModeDelta, 65, 38},
}

// Find returns the median run (by propagation p50) of a mode and
// encoding, or nil: a real run rather than a mix of several.
func (r *Result) Find(mode, encoding string) *LatencyResult {
	var runs []*LatencyResult
	for _, l := range r.Latency {
		if l.Mode == mode && (encoding == "" || l.Encoding == encoding) {
			runs = append(runs, l)
		}
	}
	return median(runs, func(l *LatencyResult) float64 { return l.Propagation.P50 })
}

// CalmOthers is the CPU (cores) other processes may have used during a
// round for it to count as calm.
const CalmOthers = 0.25

// FindCalm is Find among the rounds in which other processes used at most
// CalmOthers cores (rounds without a machine reading do not count).
func (r *Result) FindCalm(mode, encoding string) *LatencyResult {
	var runs []*LatencyResult
	for _, l := range r.Latency {
		if o, ok := l.Usage["others"]; ok && o.CPUCores <= CalmOthers && l.Mode == mode && (encoding == "" || l.Encoding == encoding) {
			runs = append(runs, l)
		}
	}
	return median(runs, func(l *LatencyResult) float64 { return l.Propagation.P50 })
}

// findTP returns the median run (by accepted writes/s) of a throughput run.
func (r *Result) findTP(name string) *ThroughputResult {
	var runs []*ThroughputResult
	for _, t := range r.Throughput {
		if t.Name == name {
			runs = append(runs, t)
		}
	}
	return median(runs, func(t *ThroughputResult) float64 { return t.PerSec })
}

// median returns the element with the median key (the lower one of an
// even count), or nil.
func median[T any](xs []T, key func(T) float64) T {
	var zero T
	if len(xs) == 0 {
		return zero
	}
	s := slices.Clone(xs)
	slices.SortStableFunc(s, func(a, b T) int { return cmp.Compare(key(a), key(b)) })
	return s[(len(s)-1)/2]
}

// Evaluate fills in r.Targets from the measurements.
func (r *Result) Evaluate() {
	r.Targets = nil
	add := func(name, want string, known bool, got string, met bool) {
		r.Targets = append(r.Targets, Check{Name: name, Want: want, Got: got, Met: known && met, Known: known})
	}
	d := r.Find(ModeDelta, "json")
	if d != nil {
		add("propagation p50 (delta, JSON)", "<= 5 ms", true, fmt.Sprintf("%.2f ms", d.Propagation.P50), d.Propagation.P50 <= 5)
		add("propagation p99 (delta, JSON)", "<= 30 ms", true, fmt.Sprintf("%.2f ms", d.Propagation.P99), d.Propagation.P99 <= 30)
		add("bytes per update per subscriber (JSON)", "<= 300", true, fmt.Sprintf("%.0f", d.SubDown), d.SubDown <= 300)
	} else {
		add("propagation (delta, JSON)", "p50 <= 5 ms, p99 <= 30 ms", false, "not run", false)
	}
	if b := r.Find(ModeDelta, "binary"); b != nil {
		add("bytes per update per subscriber (binary)", "<= 120", true, fmt.Sprintf("%.0f", b.SubDown), b.SubDown <= 120)
		add("propagation p50 / p99 (delta, binary)", "<= 5 / 30 ms", true,
			fmt.Sprintf("%.2f / %.2f ms", b.Propagation.P50, b.Propagation.P99), b.Propagation.P50 <= 5 && b.Propagation.P99 <= 30)
	} else {
		add("bytes per update per subscriber (binary)", "<= 120", false, "not run", false)
	}
	type mk struct{ mode, enc string }
	var order []mk
	sum := map[mk][2]int64{}
	for _, l := range r.Latency {
		k := mk{l.Mode, l.Encoding}
		if _, ok := sum[k]; !ok {
			order = append(order, k)
		}
		s := sum[k]
		sum[k] = [2]int64{s[0] + l.Missed, s[1] + l.Dup}
	}
	for _, k := range order {
		s := sum[k]
		add(fmt.Sprintf("deliveries missed/duplicated (%s, %s, all runs)", k.mode, k.enc), "0 / 0", true,
			fmt.Sprintf("%d / %d", s[0], s[1]), s[0] == 0 && s[1] == 0)
	}
	if t := r.findTP("distinct"); t != nil {
		add(fmt.Sprintf("accepted writes/s over %d documents", t.Docs), ">= 5000", true, fmt.Sprintf("%.0f", t.PerSec), t.PerSec >= 5000)
	}
	if t := r.findTP("hot"); t != nil {
		add("accepted writes/s on one hot document", ">= 1000", true, fmt.Sprintf("%.0f", t.PerSec), t.PerSec >= 1000)
	}
	if i := r.Idle; i != nil {
		add(fmt.Sprintf("app RSS with %d idle WebSocket connections", i.Conns), "<= 1024 MiB", i.Opened == i.Conns,
			fmt.Sprintf("%.0f MiB (%d open, %.1f KiB each)", i.AppRSS, i.Opened, i.PerConnKiB), i.AppRSS <= 1024)
	}
}

// Failed reports deliveries that were missed or duplicated, or subscriber
// errors, in any mode: the run's correctness, independent of its speed.
func (r *Result) Failed() []string {
	var out []string
	for _, l := range r.Latency {
		if l.Missed != 0 || l.Dup != 0 || l.Errors != 0 {
			out = append(out, fmt.Sprintf("%s/%s: %d missed, %d duplicated, %d errors", l.Mode, l.Encoding, l.Missed, l.Dup, l.Errors))
		}
		if l.Accepted == 0 {
			out = append(out, fmt.Sprintf("%s/%s: no op was accepted", l.Mode, l.Encoding))
		}
	}
	return out
}

// Markdown renders the result as tables.
func (r *Result) Markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "## Profile `%s` (%s)\n\n", r.Profile, r.Started)
	fmt.Fprintf(&b, "Machine: %s. Command: `%s`\n\n", r.Machine, r.Command)
	b.WriteString("### Propagation (writer sends → each subscriber receives)\n\n")
	b.WriteString("| run | mode | enc | subs/docs | doc | writes/s | p50 ms | p90 ms | p99 ms | max ms | ack p50/p99 ms | B/update/sub ↓ | ↑ | writer B/op ↑/↓ | missed | dup | CPU cores app / daprd / redis / bench / others | app RSS MiB |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, l := range r.Latency {
		app := l.Usage["app"]
		fmt.Fprintf(&b, "| %d | %s | %s | %d/%d | %d KB | %.0f | %.2f | %.2f | %.2f | %.1f | %.2f / %.2f | %.0f | %.0f | %.0f / %.0f | %d | %d | %s | %.0f |\n",
			l.Run, l.Mode, l.Encoding, l.Subscribers, l.Docs, l.DocBytes/1024, l.PerSec, l.Propagation.P50, l.Propagation.P90,
			l.Propagation.P99, l.Propagation.Max, l.Ack.P50, l.Ack.P99, l.SubDown, l.SubUp, l.WriterUp, l.WriterAck,
			l.Missed, l.Dup, cpus(l.Usage), app.RSSMiB)
	}
	for _, l := range r.Latency {
		if l.Mode == ModePoll && l.Polls > 0 && l.Subscribers > 0 && l.Seconds > 0 {
			fmt.Fprintf(&b, "\nPolling, round %d: %d requests (%.2f per client per second), %d of them returned a new version, the rest 304 Not Modified.\n",
				l.Run, l.Polls, float64(l.Polls)/float64(l.Subscribers)/l.Seconds, l.PollsChanged)
		}
	}
	if d := r.Find(ModeDelta, "json"); d != nil {
		b.WriteString("\n### Against the seed's table (per update, per subscriber; median run of each mode by p50)\n\n")
		b.WriteString("| approach | seed latency | seed bytes | measured p50 / p99 | measured bytes ↓+↑ | latency vs delta (p50) | bytes vs delta |\n|---|---|---|---|---|---|---|\n")
		for _, s := range Seed {
			l := r.Find(s.Mode, "")
			if s.Mode == ModeDelta {
				l = d
			}
			if l == nil {
				fmt.Fprintf(&b, "| %s | %.0f ms | %.0f KB | not run | | | |\n", s.Name, s.Latency, s.KB)
				continue
			}
			fmt.Fprintf(&b, "| %s | %.0f ms | %.0f KB | %.2f / %.2f ms | %s | %s | %s |\n", s.Name, s.Latency, s.KB,
				l.Propagation.P50, l.Propagation.P99, human(l.SubDown+l.SubUp),
				ratio(l.Propagation.P50, d.Propagation.P50), ratio(l.SubDown+l.SubUp, d.SubDown+d.SubUp))
		}
		if bin := r.Find(ModeDelta, "binary"); bin != nil {
			fmt.Fprintf(&b, "| Open-AutoGLM delta, binary | | | %.2f / %.2f ms | %s | %s | %s |\n",
				bin.Propagation.P50, bin.Propagation.P99, human(bin.SubDown+bin.SubUp),
				ratio(bin.Propagation.P50, d.Propagation.P50), ratio(bin.SubDown+bin.SubUp, d.SubDown+d.SubUp))
		}
	}
	if d := r.FindCalm(ModeDelta, "json"); d != nil {
		fmt.Fprintf(&b, "\n### Calm rounds only (other processes used at most %.2f cores; median of those rounds)\n\n", CalmOthers)
		b.WriteString("| mode | enc | rounds | p50 ms | p90 ms | p99 ms | B/update/sub ↓+↑ | latency vs delta (p50) | bytes vs delta |\n|---|---|---|---|---|---|---|---|---|\n")
		for _, m := range [][2]string{{ModeDelta, "json"}, {ModeDelta, "binary"}, {ModeFull, "json"}, {ModePoll, "rest"}} {
			l := r.FindCalm(m[0], m[1])
			if l == nil {
				continue
			}
			n := 0
			for _, x := range r.Latency {
				if o, ok := x.Usage["others"]; ok && o.CPUCores <= CalmOthers && x.Mode == m[0] && x.Encoding == m[1] {
					n++
				}
			}
			fmt.Fprintf(&b, "| %s | %s | %d | %.2f | %.2f | %.2f | %s | %s | %s |\n", l.Mode, l.Encoding, n,
				l.Propagation.P50, l.Propagation.P90, l.Propagation.P99, human(l.SubDown+l.SubUp),
				ratio(l.Propagation.P50, d.Propagation.P50), ratio(l.SubDown+l.SubUp, d.SubDown+d.SubUp))
		}
	}
	if len(r.Throughput) > 0 {
		b.WriteString("\n### Write throughput (closed loop)\n\n| run | # | docs | conns × window | accepted/s | rejected | ack p50 / p99 ms | CPU cores app / daprd / redis / bench / others |\n|---|---|---|---|---|---|---|---|\n")
		for _, t := range r.Throughput {
			rej := fmt.Sprint(t.Rejected)
			for code, n := range t.Codes {
				rej += fmt.Sprintf(" %s:%d", code, n)
			}
			fmt.Fprintf(&b, "| %s | %d | %d | %d × %d | %.0f | %s | %.1f / %.1f | %s |\n", t.Name, t.Run, t.Docs, t.Conns, t.Window,
				t.PerSec, rej, t.Ack.P50, t.Ack.P99, cpus(t.Usage))
		}
	}
	if i := r.Idle; i != nil {
		fmt.Fprintf(&b, "\n### Idle connections\n\n%d of %d WebSocket sessions open (hello + one subscription each): app RSS %.0f MiB (%.0f before, %.1f KiB per connection), daprd %.0f MiB.\n",
			i.Opened, i.Conns, i.AppRSS, i.AppRSSBefore, i.PerConnKiB, i.DaprdRSS)
		if i.Error != "" {
			fmt.Fprintf(&b, "Error: %s\n", i.Error)
		}
	}
	if len(r.Targets) > 0 {
		b.WriteString("\n### Targets\n\n| target | want | got | met |\n|---|---|---|---|\n")
		for _, c := range r.Targets {
			met := "no"
			switch {
			case !c.Known:
				met = "not measured"
			case c.Met:
				met = "yes"
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", c.Name, c.Want, c.Got, met)
		}
	}
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "\n%s\n", n)
	}
	return b.String()
}

func cpus(u map[string]Usage) string {
	var parts []string
	for _, name := range []string{"app", "daprd", "redis", "bench", "others"} {
		if v, ok := u[name]; ok {
			parts = append(parts, fmt.Sprintf("%.2f", v.CPUCores))
		} else {
			parts = append(parts, "–")
		}
	}
	return strings.Join(parts, " / ")
}

func human(bytes float64) string {
	if bytes >= 1024 {
		return fmt.Sprintf("%.1f KB", bytes/1024)
	}
	return fmt.Sprintf("%.0f B", bytes)
}

func ratio(a, b float64) string {
	if b <= 0 {
		return "–"
	}
	return fmt.Sprintf("%.1f×", a/b)
}
