package compaction_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/open-autoglm/autoglm/app/config"
	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/internal/rest"
	"github.com/open-autoglm/autoglm/app/internal/servicetest"
	"github.com/open-autoglm/autoglm/app/internal/testutil"
)

// Two replicas in process, one cluster: one of them takes the compaction
// lease, and a quiet document written through either has its tail archived
// to the op log, every version of it readable from there.
func TestCompactionInProcess(t *testing.T) {
	fast := func(c *config.Config) {
		c.CompactionInterval, c.CompactionQuiet, c.CompactionLease = 50*time.Millisecond, 10*time.Millisecond, 2*time.Second
	}
	a := servicetest.Start(t, servicetest.Options{Config: fast})
	b := servicetest.Start(t, servicetest.Options{Config: fast, Store: a.Store, Broker: a.Broker, State: a.State})
	k := core.Key{Collection: "notes", ID: "n1"}
	for i := 1; i <= 3; i++ {
		r := a
		if i == 2 {
			r = b
		}
		body := fmt.Sprintf(`{"ops":[{"op":"set","path":"n","value":%d}]}`, i)
		if res := rest.Must(t, "PATCH", r.URL()+"/v1/docs/"+k.String(), body); res.Status/100 != 2 {
			t.Fatalf("patch %d: %d %s", i, res.Status, res.Raw)
		}
	}
	resource := "compaction:" + a.Cfg.BroadcastTopic
	testutil.Eventually(t, 10*time.Second, "a replica holds the compaction lease", func() bool {
		h := a.State.Holder(resource)
		return strings.HasPrefix(h, a.Cfg.NodeID+"/") || strings.HasPrefix(h, b.Cfg.NodeID+"/")
	})
	ctx := context.Background()
	testutil.Eventually(t, 10*time.Second, "the tail archived", func() bool {
		st, err := a.Store.Load(ctx, k)
		return err == nil && st.Doc != nil && st.Doc.Version == 3 && len(st.Doc.Tail) == 0 && a.Store.LogLen(k) == 3
	})
	cs, err := a.Store.Changes(ctx, k, 1, 3)
	if err != nil || len(cs) != 3 {
		t.Fatalf("op log after compaction: %v %v", cs, err)
	}
	for i, c := range cs {
		if c.Version != int64(i+1) {
			t.Fatalf("op log %v: version %d at %d", cs, c.Version, i)
		}
	}
}
