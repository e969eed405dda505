package events_test

import (
	"encoding/json"
	"strconv"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/events"
	"github.com/open-autoglm/autoglm/app/merge"
)

func TestBuild(t *testing.T) {
	set := []merge.FieldOp{{Op: merge.KindSet, Path: "total", Value: json.RawMessage("12")}}
	tests := []struct {
		name    string
		changes []core.Change
		typ     string
		version int64
		prev    int64
	}{
		{"Created", []core.Change{{Doc: "orders/o1", Version: 1, Created: true, Ops: set}}, events.TypeCreated, 1, 0},
		{"Changed", []core.Change{{Doc: "orders/o1", Version: 5, Prev: 4, Ops: set}}, events.TypeChanged, 5, 4},
		{"Deleted", []core.Change{{Doc: "orders/o1", Version: 6, Prev: 5, Deleted: true}}, events.TypeDeleted, 6, 5},
		// Writes coalesced into one commit: one event, every version in it.
		{"Coalesced", []core.Change{{Doc: "orders/o1", Version: 1, Created: true, Ops: set},
			{Doc: "orders/o1", Version: 2, Prev: 1, Ops: set}}, events.TypeCreated, 2, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := events.Build(tt.changes)
			if d.Type() != tt.typ || d.Version != tt.version || d.Prev != tt.prev || d.Collection != "orders" || d.ID != "o1" {
				t.Fatalf("%+v type %s", d, d.Type())
			}
			want := map[string]string{"type": tt.typ, "subject": "orders/o1", "collection": "orders",
				"docversion": strconv.FormatInt(tt.version, 10)}
			if diff := cmp.Diff(want, d.Attributes()); diff != "" {
				t.Fatalf("attributes (-want +got):\n%s", diff)
			}
			b, _ := json.Marshal(d)
			var back events.Data
			if err := json.Unmarshal(b, &back); err != nil || len(back.Changes) != len(tt.changes) {
				t.Fatalf("round trip %s: %v", b, err)
			}
		})
	}
}
