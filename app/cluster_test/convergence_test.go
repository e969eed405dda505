package cluster_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/open-autoglm/autoglm/app/internal/cluster"
)

// TestHotDocument: 30 clients spread over 3 replicas write one document at
// once, each waiting for its ack before the next op. Every client ends with
// the stored document, versions are dense, every acknowledged op is in the
// log exactly once, and the ETag conflicts between replicas are counted.
func TestHotDocument(t *testing.T) {
	for _, profile := range []string{"redis", "postgres"} {
		t.Run(profile, func(t *testing.T) {
			c := cluster.Start(t, cluster.Options{Profile: profile, Env: []string{"AUTOGLM_ANTI_ENTROPY=1s", "AUTOGLM_LOG_WINDOW=5000"}})
			doc := collection() + "/hot"
			create(t, c.Nodes[0].URL(), []string{doc})
			var writers []*writer
			for i := range 30 {
				writers = append(writers, dialWriter(t, fmt.Sprintf("w%d", i), c.WSURLs(i%3), []string{doc}))
			}
			conflicts0 := metricSum(t, c.Nodes, "autoglm_etag_conflicts_total")
			batches0 := metricSum(t, c.Nodes, "autoglm_write_batch_size_count")
			const perClient = 40
			start := time.Now()
			var wg sync.WaitGroup
			for _, w := range writers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range perClient {
						w.write(doc, i)
					}
				}()
			}
			wg.Wait()
			elapsed := time.Since(start)
			ops, took := verify(t, c.Nodes[1].URL(), []string{doc}, writers, 30*time.Second)
			conflicts := metricSum(t, c.Nodes, "autoglm_etag_conflicts_total") - conflicts0
			batches := metricSum(t, c.Nodes, "autoglm_write_batch_size_count") - batches0
			t.Logf("%s: %d ops from 30 clients on 3 replicas in %v (%.0f ops/s); all converged %v after the last ack",
				profile, ops, elapsed.Round(time.Millisecond), float64(ops)/elapsed.Seconds(), took.Round(time.Millisecond))
			t.Logf("%s: ETag conflicts %.0f over %.0f write batches (%.2f per batch, %.2f per op; %.1f ops per batch); ops refused and resent: %v",
				profile, conflicts, batches, conflicts/batches, conflicts/float64(ops), float64(ops)/batches, refusals(writers))
		})
	}
}
