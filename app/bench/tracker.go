package bench

import "time"

// Stream checks what one subscriber received of one document and records
// when each version arrived. Delta streams must see every version exactly
// once, in order; snapshot streams (full push, polling) may skip versions a
// later snapshot covers, but must never see a version twice or go back.
type Stream struct {
	Delta bool
	// Last is the version the subscriber holds.
	Last int64
	// Dup counts versions received again (or going back); Missed counts
	// versions a delta stream skipped.
	Dup, Missed int64
	// Arrivals are the receive times of the versions after the start, for
	// the latency join: each covers the versions since the previous one.
	Arrivals []Arrival
}

// Arrival is a version reaching a subscriber.
type Arrival struct {
	From, To int64 // versions From..To (inclusive) became visible
	At       int64 // unix nanoseconds
}

// Start sets the version the subscriber began with (its snapshot).
func (s *Stream) Start(v int64) { s.Last = v }

// Receive records version v arriving at t.
func (s *Stream) Receive(v int64, t time.Time) {
	switch {
	case v <= s.Last:
		s.Dup++
		return
	case v > s.Last+1 && s.Delta:
		s.Missed += v - s.Last - 1
	}
	s.Arrivals = append(s.Arrivals, Arrival{From: s.Last + 1, To: v, At: t.UnixNano()})
	s.Last = v
}

// Finish accounts the versions up to final that never arrived.
func (s *Stream) Finish(final int64) {
	if final > s.Last {
		s.Missed += final - s.Last
	}
}

// Latencies joins the arrivals with the send times of the versions
// (sent(v) returns the unix nanoseconds when the op that produced v was
// sent, and false for versions not written by this run) and appends one
// latency per version that became visible.
func (s *Stream) Latencies(dst []time.Duration, sent func(v int64) (int64, bool)) []time.Duration {
	for _, a := range s.Arrivals {
		for v := a.From; v <= a.To; v++ {
			if t, ok := sent(v); ok {
				dst = append(dst, time.Duration(max(a.At-t, 0)))
			}
		}
	}
	return dst
}
