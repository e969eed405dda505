// Package bench is the load generator behind `make bench`: it drives a
// running service with WebSocket subscribers and writers (delta sync, and
// the full-push and polling baselines on the same documents), measures
// end-to-end propagation and ack latency, throughput, missed and duplicated
// deliveries, bytes on the wire counted at the socket, and the server's CPU
// and memory, and renders the result as JSON, a markdown table and a CDF
// plot. The pure parts (percentiles, byte counting, delivery checking,
// plotting) are unit-tested; cmd/autoglm-bench wires them to processes.
package bench

import (
	"math"
	"slices"
	"time"
)

// Summary describes a latency sample.
type Summary struct {
	N    int     `json:"n"`
	P50  float64 `json:"p50_ms"`
	P90  float64 `json:"p90_ms"`
	P99  float64 `json:"p99_ms"`
	Max  float64 `json:"max_ms"`
	Mean float64 `json:"mean_ms"`
}

// Summarize sorts samples in place and returns their percentiles in
// milliseconds (nearest rank: the smallest sample with at least p% of the
// samples at or below it).
func Summarize(samples []time.Duration) Summary {
	if len(samples) == 0 {
		return Summary{}
	}
	slices.Sort(samples)
	var sum time.Duration
	for _, s := range samples {
		sum += s
	}
	return Summary{
		N:    len(samples),
		P50:  ms(Percentile(samples, 50)),
		P90:  ms(Percentile(samples, 90)),
		P99:  ms(Percentile(samples, 99)),
		Max:  ms(samples[len(samples)-1]),
		Mean: ms(sum / time.Duration(len(samples))),
	}
}

// Percentile returns the nearest-rank p-th percentile of sorted samples.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

// Point is one point of a cumulative distribution: the fraction of samples
// at or below X milliseconds.
type Point struct {
	X float64 `json:"ms"`
	Y float64 `json:"frac"`
}

// CDF returns at most n points of the empirical distribution of sorted
// samples, always including the minimum and maximum.
func CDF(sorted []time.Duration, n int) []Point {
	if len(sorted) == 0 || n < 2 {
		return nil
	}
	step := max(len(sorted)/n, 1)
	var out []Point
	for i := 0; i < len(sorted); i += step {
		out = append(out, Point{X: ms(sorted[i]), Y: float64(i+1) / float64(len(sorted))})
	}
	if last := len(sorted) - 1; out[len(out)-1].Y != 1 {
		out = append(out, Point{X: ms(sorted[last]), Y: 1})
	}
	return out
}

func ms(d time.Duration) float64 { return math.Round(float64(d)/1e3) / 1e3 }
