package main

import (
	"math"
	"testing"
)

// The traced/untraced comparison pairs the sides within each round before
// taking the median, so a round that is slow for everyone counts once.
func TestPairedPct(t *testing.T) {
	var rounds []traceRound
	for i, r := range [][2]float64{{21.7, 20.1}, {19.9, 18.4}, {25.6, 29.6}, {25.4, 36.6}, {36.3, 37.7}} {
		rounds = append(rounds, traceRound{Round: i + 1, Tracing: "off", AppMicros: r[0]},
			traceRound{Round: i + 1, Tracing: "on", AppMicros: r[1]})
	}
	if got := pairedPct(rounds, "on", "off"); math.Abs(got-3.857) > 0.01 {
		t.Errorf("paired %% = %.3f, want +3.857 (round 5)", got)
	}
	if got := medianOf([]float64{4, 1, 3, 2}); got != 2.5 {
		t.Errorf("median %v", got)
	}
	if got := pairedPct(rounds, "on", "baseline"); got != 0 {
		t.Errorf("no baseline rounds: %v", got)
	}
}
