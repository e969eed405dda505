package cluster_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/open-autoglm/autoglm/app/client"
	"github.com/open-autoglm/autoglm/app/internal/clienttest"
	"github.com/open-autoglm/autoglm/app/internal/cluster"
	"github.com/open-autoglm/autoglm/app/internal/otlpsink"
)

// TestTraceOneChange follows one REST change end to end through two
// replicas exporting to an in-test OTLP receiver: the request on the first
// replica, its commit, the state transaction and the publish to daprd, the
// broadcast's receipt on the second replica and the delivery to the
// watcher there, all in the caller's trace with the right parents; and
// daprd's own spans join the same trace.
func TestTraceOneChange(t *testing.T) {
	sink, err := otlpsink.Start(false)
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Stop()
	c := cluster.Start(t, cluster.Options{Profile: "redis", Replicas: 2, Env: []string{
		"OTEL_EXPORTER_OTLP_ENDPOINT=" + sink.Endpoint(),
		"OTEL_EXPORTER_OTLP_PROTOCOL=grpc",
		"OTEL_BSP_SCHEDULE_DELAY=100",
	}})
	writer, reader := c.Nodes[0], c.Nodes[1]
	doc := collection() + "/traced"
	create(t, writer.URL(), []string{doc})

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d := clienttest.Watch(t, ctx, reader.WSURL(), client.Options{ClientID: "watcher"}, doc, 1)

	traceID, callerSpan := randomHex(16), randomHex(8)
	r := mustDo(t, "PATCH", writer.URL()+"/v1/docs/"+doc, `{"ops":[{"op":"set","path":"n","value":1}]}`,
		"traceparent", "00-"+traceID+"-"+callerSpan+"-01")
	if r.Status != 200 {
		t.Fatalf("PATCH: %d %s", r.Status, r.Raw)
	}
	if err := d.WaitVersion(ctx, 2); err != nil {
		t.Fatalf("the watcher on the second replica did not get version 2: %v", err)
	}

	// The spans of each process arrive in their own batches.
	var tree *spanTree
	spans, ok := sink.Wait(ctx, traceID, func(spans []otlpsink.Span) bool {
		tree = newSpanTree(spans)
		return tree.complete(writer, reader)
	})
	t.Logf("trace %s as exported (%d spans):\n%s", traceID, len(spans), otlpsink.Tree(spans))
	if !ok {
		t.Fatalf("the trace is incomplete: %s", tree.missing(writer, reader))
	}

	req := tree.one(t, writer.NodeID, "PATCH /v1/docs/{coll}/{id}")
	if req.Parent != callerSpan {
		t.Errorf("request span's parent %q, want the caller's span %s", req.Parent, callerSpan)
	}
	commit := tree.one(t, writer.NodeID, "commit "+strings.Split(doc, "/")[0])
	tree.childOf(t, commit, req)
	if commit.Attrs["autoglm.batch.size"] != "1" || commit.Attrs["autoglm.doc"] != doc {
		t.Errorf("commit attributes %v", commit.Attrs)
	}
	// On Redis the document is written alone (SaveState, ETag-guarded);
	// this second version keeps the first in the document's tail, so no
	// op-log keys are written (app/daprstore, engine.tailHasRoom).
	tree.childOf(t, tree.one(t, writer.NodeID, "dapr.proto.runtime.v1.Dapr/SaveState"), commit)
	publish := tree.one(t, writer.NodeID, "dapr.proto.runtime.v1.Dapr/PublishEvent")
	tree.childOf(t, publish, commit)
	receipt := tree.one(t, reader.NodeID, "receive "+c.Topic)
	tree.childOf(t, receipt, commit)
	deliver := tree.one(t, reader.NodeID, "deliver")
	tree.childOf(t, deliver, receipt)
	if deliver.Attrs["autoglm.sessions"] != "1" || deliver.Attrs["autoglm.version"] != "2" ||
		deliver.Attrs["autoglm.queue_wait_max_ms"] == "" {
		t.Errorf("delivery attributes %v, want 1 session, version 2 and the slowest wait", deliver.Attrs)
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// spanTree indexes one trace's spans.
type spanTree struct {
	spans    []otlpsink.Span
	byID     map[string]otlpsink.Span
	children map[string][]otlpsink.Span
}

func newSpanTree(spans []otlpsink.Span) *spanTree {
	t := &spanTree{spans: spans, byID: map[string]otlpsink.Span{}, children: map[string][]otlpsink.Span{}}
	for _, s := range spans {
		t.byID[s.SpanID] = s
		t.children[s.Parent] = append(t.children[s.Parent], s)
	}
	return t
}

func (t *spanTree) find(node, name string) []otlpsink.Span {
	var out []otlpsink.Span
	for _, s := range t.spans {
		if s.Instance == node && s.Name == name {
			out = append(out, s)
		}
	}
	return out
}

// wanted are the app spans one change makes, by replica (0: writer, 1:
// reader); the names with a {topic} or {coll} are filled in by complete.
func (t *spanTree) wanted(writer, reader *cluster.Node) map[string][]string {
	return map[string][]string{
		writer.NodeID: {"PATCH /v1/docs/{coll}/{id}", "dapr.proto.runtime.v1.Dapr/SaveState",
			"dapr.proto.runtime.v1.Dapr/PublishEvent"},
		reader.NodeID: {"deliver"},
	}
}

func (t *spanTree) missing(writer, reader *cluster.Node) string {
	var miss []string
	for node, names := range t.wanted(writer, reader) {
		for _, n := range names {
			if len(t.find(node, n)) == 0 {
				miss = append(miss, n+" on "+node)
			}
		}
	}
	if !t.daprdPublish() {
		miss = append(miss, "daprd's span of the publish")
	}
	return strings.Join(miss, ", ")
}

func (t *spanTree) complete(writer, reader *cluster.Node) bool {
	if t.missing(writer, reader) != "" {
		return false
	}
	// Every app span's parent has arrived (the trace's root has the
	// caller's span, which is never exported, as its parent).
	roots := 0
	for _, s := range t.spans {
		if _, ok := t.byID[s.Parent]; !ok && s.Instance != "" {
			roots++
		}
	}
	return roots == 1
}

// daprdPublish reports whether daprd's span of the publish call arrived,
// as a child of the app's gRPC call (daprd's spans carry no instance id).
func (t *spanTree) daprdPublish() bool {
	for _, call := range t.spans {
		if call.Name != "dapr.proto.runtime.v1.Dapr/PublishEvent" || call.Instance == "" {
			continue
		}
		for _, s := range t.children[call.SpanID] {
			if s.Instance == "" {
				return true
			}
		}
	}
	return false
}

func (t *spanTree) one(tb testing.TB, node, name string) otlpsink.Span {
	tb.Helper()
	got := t.find(node, name)
	if len(got) != 1 {
		tb.Fatalf("%d spans %q on %s, want 1", len(got), name, node)
	}
	return got[0]
}

func (t *spanTree) childOf(tb testing.TB, child, parent otlpsink.Span) {
	tb.Helper()
	if child.Parent != parent.SpanID {
		p := t.byID[child.Parent]
		tb.Errorf("%s (%s) is a child of %q, want %s", child.Name, child.Instance, fmt.Sprint(p.Name, "@", p.Instance), parent.Name)
	}
}
