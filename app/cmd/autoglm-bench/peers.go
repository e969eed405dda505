package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/open-autoglm/autoglm/app/bench"
)

// peerFlags configure the side-by-side run against Hocuspocus and
// y-websocket (app/bench/peers.go).
type peerFlags struct {
	dir      string
	only     bool
	quick    bool
	rounds   int
	duration time.Duration
	servers  string
	loads    string
}

func (p *peerFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&p.dir, "peers", "", "run the peer comparison with the node packages in this directory (app/bench/peers, after npm ci); empty: skip")
	fs.BoolVar(&p.only, "peers-only", false, "run only the peer comparison")
	fs.BoolVar(&p.quick, "peers-quick", false, "peer comparison sanity check: one round of 3 s, 100 subscribers at 200/s, local profile only")
	fs.IntVar(&p.rounds, "peers-rounds", 3, "peer comparison: interleaved rounds; tables quote the median")
	fs.DurationVar(&p.duration, "peers-duration", 10*time.Second, "peer comparison: writing time per run")
	fs.StringVar(&p.loads, "peers-workloads", "100x200,1000x20", "peer comparison: workloads as <subscribers>x<writes per second>, comma-separated")
	fs.StringVar(&p.servers, "peers-servers", "hocuspocus,y-websocket,ours-json/local,ours-bin/local,ours-json/redis", "peer comparison: servers, ours as ours-json|ours-bin/<profile>")
}

// runPeers runs the comparison, writes bench/out/peers/result.{json,md}
// and prints the table; it returns the runs that missed deliveries.
func runPeers(ctx context.Context, o options) ([]string, error) {
	p := o.peers
	po := bench.PeerOptions{Dir: p.dir, Servers: split(p.servers), Duration: p.duration, Rounds: p.rounds,
		Redis: o.redis, AppBin: o.appBin, Nice: o.nice}
	for _, w := range split(p.loads) {
		n, r, ok := strings.Cut(w, "x")
		subs, err1 := strconv.Atoi(n)
		rate, err2 := strconv.ParseFloat(r, 64)
		if !ok || err1 != nil || err2 != nil || subs < 2 || rate <= 0 {
			return nil, fmt.Errorf("-peers-workloads: %q is not <subscribers>x<writes per second>", w)
		}
		po.Workloads = append(po.Workloads, bench.PeerWorkload{Subs: subs, Rate: rate})
	}
	if p.quick {
		po.Rounds, po.Duration = 1, 3*time.Second
		po.Workloads = po.Workloads[:1]
		var local []string
		for _, s := range po.Servers {
			if !strings.HasSuffix(s, "/redis") {
				local = append(local, s)
			}
		}
		po.Servers = local
	}
	outDir := filepath.Join(o.out, "peers")
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return nil, err
	}
	if o.pprof {
		po.ProfileDir = outDir
	}
	logf, err := os.Create(filepath.Join(outDir, "service.log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	po.Log = logf
	if o.verbose {
		po.Log = io.MultiWriter(logf, os.Stderr)
	}
	runs, err := bench.RunPeers(ctx, po)
	if err != nil {
		return nil, err
	}
	sum := bench.SummarizePeers(runs)
	table := bench.PeerTable(sum)
	res := map[string]any{"started": time.Now().UTC().Format(time.RFC3339), "machine": machine(), "command": o.command,
		"rounds": po.Rounds, "duration_s": po.Duration.Seconds(), "runs": runs, "medians": sum}
	b, _ := json.MarshalIndent(res, "", "  ")
	if err := os.WriteFile(filepath.Join(outDir, "result.json"), b, 0o644); err != nil {
		return nil, err
	}
	md := fmt.Sprintf("# Peer comparison\n\n%s\n\nMedians of %d interleaved rounds of %s per run; ratio = ours ÷ the best peer.\nMachine: %s\n\n%s",
		o.command, po.Rounds, po.Duration, machine(), table)
	if err := os.WriteFile(filepath.Join(outDir, "result.md"), []byte(md), 0o644); err != nil {
		return nil, err
	}
	fmt.Println(table)
	var fails []string
	for _, s := range sum {
		if s.Missing > 0 {
			fails = append(fails, fmt.Sprintf("peers %s N=%d: %d updates not received", s.Server, s.Workload.Subs, s.Missing))
		}
	}
	return fails, nil
}
