// Package procs sizes the Go scheduler to the process's load.
//
// While the service needs less than one core, one P (GOMAXPROCS=1) serves
// it best. Every write hands work from goroutine to goroutine (the
// connection's reader, the session, the document's writer, the gRPC
// client's writer and reader); with a second P idle, each hand-off wakes
// another thread, which spins looking for work and parks again. At a few
// hundred writes per second that wake-spin-park cycle was about a fifth of
// the app's CPU, and it added latency too (docs/benchmarks.md). With one P
// the woken goroutine simply runs next on the same thread.
//
// Once the process keeps one core busy, one P is the bottleneck: Run then
// gives back every P the runtime chose at start (GOMAXPROCS's default,
// which follows the container's CPU limit), and returns to one after the
// load has stayed low for a while. The thresholds are apart, so a load
// near either does not make it flap.
package procs

import (
	"context"
	"os"
	"runtime"
	"time"
)

// Options configure Run. Zero fields take the defaults.
type Options struct {
	// Max is the Ps under load; 0: runtime.GOMAXPROCS(0) when Run starts.
	// Run does nothing when Max is 1.
	Max int
	// Interval is how often the load is measured (250 ms).
	Interval time.Duration
	// Up is the load, in cores, at which one P is too few (0.75).
	Up float64
	// Down is the load below which Max Ps are more than needed (0.5),
	// once it has held for Calm intervals in a row (8: two seconds).
	Down float64
	Calm int
	// CPU returns the CPU time the process has used so far (user and
	// system, every thread); nil: the operating system's count.
	CPU func() time.Duration
	// Set sets the number of Ps (nil: runtime.GOMAXPROCS).
	Set func(n int)
	// OnChange, when set, is told of every change and the load that made
	// it.
	OnChange func(from, to int, load float64)
}

func (o *Options) defaults() {
	if o.Max == 0 {
		o.Max = runtime.GOMAXPROCS(0)
	}
	if o.Interval <= 0 {
		o.Interval = 250 * time.Millisecond
	}
	if o.Up == 0 {
		o.Up = 0.75
	}
	if o.Down == 0 {
		o.Down = 0.5
	}
	if o.Calm <= 0 {
		o.Calm = 8
	}
	if o.CPU == nil {
		o.CPU = processCPU
	}
	if o.Set == nil {
		o.Set = func(n int) { runtime.GOMAXPROCS(n) }
	}
}

// Size applies the process's setting until ctx ends: a GOMAXPROCS in the
// environment is left as it is, fixed > 0 fixes the Ps at fixed, and
// otherwise Run sizes them to the load (where the platform tells the
// process's CPU time), telling onChange (may be nil) of each change.
func Size(ctx context.Context, fixed int, onChange func(from, to int, load float64)) {
	switch {
	case os.Getenv("GOMAXPROCS") != "":
	case fixed > 0:
		runtime.GOMAXPROCS(fixed)
	case processCPU() > 0:
		Run(ctx, Options{OnChange: onChange})
	}
}

// Run starts with one P and resizes until ctx ends; it then restores Max.
func Run(ctx context.Context, o Options) {
	o.defaults()
	if o.Max <= 1 {
		return
	}
	c := controller{max: o.Max, up: o.Up, down: o.Down, calm: o.Calm, procs: 1}
	o.Set(1)
	defer o.Set(o.Max)
	t := time.NewTicker(o.Interval)
	defer t.Stop()
	last, lastAt := o.CPU(), time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			used := o.CPU()
			load := float64(used-last) / float64(now.Sub(lastAt))
			last, lastAt = used, now
			from := c.procs
			if to := c.step(load); to != from {
				o.Set(to)
				if o.OnChange != nil {
					o.OnChange(from, to, load)
				}
			}
		}
	}
}

// controller decides the number of Ps from one measured load (cores used
// over the last interval) after another.
type controller struct {
	max      int
	up, down float64
	calm     int

	procs int
	quiet int // intervals in a row below down, at max Ps
}

func (c *controller) step(load float64) int {
	switch {
	case c.procs == 1:
		if load >= c.up {
			c.procs, c.quiet = c.max, 0
		}
	case load < c.down:
		if c.quiet++; c.quiet >= c.calm {
			c.procs, c.quiet = 1, 0
		}
	default:
		c.quiet = 0
	}
	return c.procs
}
