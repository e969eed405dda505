package bench

import (
	"strings"
	"testing"
)

func TestSummarizePeersTakesMediansAndRatiosAgainstTheBestPeer(t *testing.T) {
	w := PeerWorkload{Subs: 100, Rate: 200}
	run := func(server string, p50, cpu float64, missing int) PeerRun {
		return PeerRun{Server: server, Workload: w, P50: p50, P99: p50 * 2, Bytes: 70, CPU: cpu, Missing: missing,
			Cores: map[string]float64{"p": 1}, WriteCPU: map[string]float64{"p": cpu * 100}}
	}
	runs := []PeerRun{
		run("hocuspocus", 1, 12, 0), run("y-websocket", 2, 10, 0), run("ours-json/local", 4, 30, 0),
		run("hocuspocus", 9, 11, 0), run("y-websocket", 2, 9, 0), run("ours-json/local", 3, 20, 1),
		run("hocuspocus", 2, 50, 0), run("y-websocket", 3, 8, 0), run("ours-json/local", 5, 25, 0),
	}
	sum := SummarizePeers(runs)
	if len(sum) != 3 {
		t.Fatalf("%d summaries, want 3", len(sum))
	}
	h, y, o := sum[0], sum[1], sum[2]
	if h.P50 != 2 || h.CPU != 12 || y.P50 != 2 || y.CPU != 9 || o.P50 != 4 || o.CPU != 25 || o.Missing != 1 || o.Rounds != 3 {
		t.Fatalf("medians: %+v %+v %+v", h, y, o)
	}
	table := PeerTable(sum)
	for _, want := range []string{"| 100, 200/s | p50 (ms) | 2.00 | 2.00 | 4.00 (2.00×) |",
		"| 100, 200/s | server CPU µs per delivery | 12.0 | 9.0 | 25.0 (2.78×) |"} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}
}
