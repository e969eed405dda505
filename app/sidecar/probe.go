// Package sidecar watches the Dapr sidecar's health so the app reports ready
// only while daprd can serve its state and pub/sub calls.
package sidecar

import (
	"context"
	"net/http"
	"sync/atomic"
	"time"
)

// Probe polls daprd's outbound health endpoint (components loaded, ready for
// the app's calls).
type Probe struct {
	URL      string // e.g. http://127.0.0.1:3500/v1.0/healthz/outbound
	Token    string // DAPR_API_TOKEN
	Interval time.Duration
	Client   *http.Client
	OnChange func(ready bool)

	ready atomic.Bool
}

// Ready reports the last observed state.
func (p *Probe) Ready() bool { return p.ready.Load() }

// Run polls until ctx ends.
func (p *Probe) Run(ctx context.Context) {
	if p.Interval <= 0 {
		p.Interval = 2 * time.Second
	}
	if p.Client == nil {
		p.Client = &http.Client{Timeout: 2 * time.Second}
	}
	t := time.NewTicker(p.Interval)
	defer t.Stop()
	for {
		p.check(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (p *Probe) check(ctx context.Context) {
	ok := false
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.URL, nil)
	if err == nil {
		if p.Token != "" {
			req.Header.Set("dapr-api-token", p.Token)
		}
		if resp, err := p.Client.Do(req); err == nil {
			resp.Body.Close()
			ok = resp.StatusCode >= 200 && resp.StatusCode < 300
		}
	}
	if p.ready.Swap(ok) != ok && p.OnChange != nil {
		p.OnChange(ok)
	}
}
