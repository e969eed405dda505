package merge

import (
	"encoding/json"
	"errors"
	"os"
	"testing"
)

// applyVector is one case of testdata/apply_vectors.json, the vectors the
// JS client's applyOps passes too (app/web/test/vectors.test.mjs): ops
// applied to doc give want, or fail with the wire code in error.
type applyVector struct {
	Name  string          `json:"name"`
	Doc   json.RawMessage `json:"doc"`
	Ops   []FieldOp       `json:"ops"`
	Want  json.RawMessage `json:"want"`
	Error string          `json:"error"`
}

// vectorErrors maps the wire codes of the vectors to merge's sentinels
// (core.CodeOf does the reverse for clients).
var vectorErrors = map[string]error{"invalid_op": ErrInvalidOp}

func TestApplyPlainSharedVectors(t *testing.T) {
	b, err := os.ReadFile("testdata/apply_vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Vectors []applyVector `json:"vectors"`
	}
	if err := json.Unmarshal(b, &file); err != nil {
		t.Fatal(err)
	}
	if len(file.Vectors) == 0 {
		t.Fatal("no vectors")
	}
	kinds := map[Kind]bool{}
	for _, v := range file.Vectors {
		for _, op := range v.Ops {
			kinds[op.Op] = true
		}
		t.Run(v.Name, func(t *testing.T) {
			var data map[string]any
			if err := json.Unmarshal(v.Doc, &data); err != nil {
				t.Fatalf("doc: %v", err)
			}
			err := ApplyPlain(data, v.Ops)
			if v.Error != "" {
				want, ok := vectorErrors[v.Error]
				if !ok {
					t.Fatalf("unknown error code %q in the vector", v.Error)
				}
				if !errors.Is(err, want) {
					t.Fatalf("got %v, want %s", err, v.Error)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var want map[string]any
			if err := json.Unmarshal(v.Want, &want); err != nil {
				t.Fatalf("want: %v", err)
			}
			if got, exp := canonical(data), canonical(want); got != exp {
				t.Fatalf("got  %s\nwant %s", got, exp)
			}
		})
	}
	for _, k := range []Kind{KindSet, KindUnset, KindInc, KindAdd, KindRemove, KindResolve} {
		if !kinds[k] {
			t.Errorf("no vector uses %s", k)
		}
	}
}
