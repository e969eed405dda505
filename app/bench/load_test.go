package bench_test

import (
	"context"
	"testing"
	"time"

	"github.com/open-autoglm/autoglm/app/bench"
	"github.com/open-autoglm/autoglm/app/internal/servicetest"
)

// The load generator's subscribers see every version written, once, in
// each WebSocket mode and encoding, and its writers get every op answered.
func TestLatencyRunDeliversEveryVersionOnce(t *testing.T) {
	r := servicetest.Start(t, servicetest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tg := bench.Target{URL: r.URL(), Collection: "loadtest", Docs: 2, DocBytes: 200, Fields: 4}
	if err := tg.Seed(ctx); err != nil {
		t.Fatal(err)
	}
	for _, cfg := range []bench.LatencyConfig{
		{Mode: bench.ModeDelta}, {Mode: bench.ModeDelta, Binary: true}, {Mode: bench.ModeFull},
	} {
		cfg.Subscribers, cfg.Writers, cfg.Rate, cfg.Duration, cfg.Drain = 6, 2, 100, 300*time.Millisecond, 10*time.Second
		res, err := bench.RunLatency(ctx, tg, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if res.Sent == 0 || res.Accepted != res.Sent || res.Expected == 0 || res.Visible != res.Expected ||
			res.Missed != 0 || res.Dup != 0 || res.Errors != 0 || res.SubDown == 0 {
			t.Errorf("%s %s: sent %d accepted %d, expected %d visible %d missed %d dup %d errors %d, %g B/update",
				cfg.Mode, res.Encoding, res.Sent, res.Accepted, res.Expected, res.Visible, res.Missed, res.Dup, res.Errors, res.SubDown)
		}
	}
}
