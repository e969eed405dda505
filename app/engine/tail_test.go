package engine_test

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/engine"
	"github.com/open-autoglm/autoglm/app/merge"
)

// commitRecorder is a store that remembers what each commit archived and
// trimmed.
type commitRecorder struct {
	core.Store
	mu      sync.Mutex
	commits []core.Commit
}

func (r *commitRecorder) Commit(ctx context.Context, c core.Commit) error {
	r.mu.Lock()
	r.commits = append(r.commits, c)
	r.mu.Unlock()
	return r.Store.Commit(ctx, c)
}

// logWrites lists the versions of the commits that wrote or deleted op-log
// keys.
func (r *commitRecorder) logWrites() []int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []int64
	for _, c := range r.commits {
		if len(c.Archive) > 0 || c.TrimFrom > 0 {
			out = append(out, c.Doc.Version)
		}
	}
	return out
}

func TestTailSparesMostCommitsTheLogKeys(t *testing.T) {
	cases := []struct {
		name   string
		window int
		value  string
		ops    int
		want   []int64 // commits that write or delete log keys
	}{
		// Eight small changes fit the tail: every eighth commit archives
		// the tail (and trims once the log is past the window).
		{"small changes", 40, "x", 50, []int64{9, 17, 25, 33, 41, 49}},
		// A quarter of a window of 12 is three changes.
		{"small window", 12, "x", 12, []int64{4, 7, 10}},
		// Two changes of 1 KiB are past the byte bound: each commit
		// archives the one before.
		{"large changes", 40, strings.Repeat("y", 1024), 6, []int64{2, 3, 4, 5, 6}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var rec *commitRecorder
			f := newFixture(t, func(o *engine.Options) {
				o.LogWindow = tc.window
				rec = &commitRecorder{Store: o.Store}
				o.Store = rec
			})
			for i := 1; i <= tc.ops; i++ {
				r := f.do(t, core.Op{ClientID: "c", OpID: uint64(i), Ops: []merge.FieldOp{set("f", tc.value+string(rune('a'+i%26)))}})
				if r.Err != nil || r.Version != int64(i) {
					t.Fatalf("op %d: v%d %v", i, r.Version, r.Err)
				}
			}
			if got := rec.logWrites(); !slices.Equal(got, tc.want) {
				t.Fatalf("commits writing log keys: %v, want %v", got, tc.want)
			}
			// Every version still in the window reads back once, in
			// order, from the log keys and the tail together.
			st, _ := f.store.Load(context.Background(), key)
			if n := len(st.Doc.Tail); n == 0 || n > max(1, min(8, tc.window/4)) {
				t.Fatalf("tail holds %d changes", n)
			}
			from := max(st.Doc.LogStart, int64(tc.ops)-int64(tc.window)+1)
			cs, err := f.store.Changes(context.Background(), key, from, int64(tc.ops))
			if err != nil || int64(len(cs)) != int64(tc.ops)-from+1 {
				t.Fatalf("changes %d..%d: %d entries, %v", from, tc.ops, len(cs), err)
			}
			for i, c := range cs {
				if c.Version != from+int64(i) {
					t.Fatalf("entry %d is version %d, want %d", i, c.Version, from+int64(i))
				}
			}
		})
	}
}

// A commit carries the document's stored form, encoded once with its size
// check; it must be exactly what the store would encode from Doc, also on
// commits that follow a refused oversized op.
func TestCommitBodyIsTheDocumentsStoredForm(t *testing.T) {
	var rec *commitRecorder
	f := newFixture(t, func(o *engine.Options) {
		o.MaxDoc = 1200
		rec = &commitRecorder{Store: o.Store}
		o.Store = rec
	})
	for i := 1; i <= 20; i++ {
		v := strings.Repeat("v", i*10)
		if i%5 == 0 {
			v = strings.Repeat("x", 1300) // over the limit: refused
		}
		f.do(t, core.Op{ClientID: "c", OpID: uint64(i), Ops: []merge.FieldOp{set("f"+string(rune('a'+i%3)), v)}})
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.commits) < 10 {
		t.Fatalf("%d commits, want at least 10", len(rec.commits))
	}
	for _, c := range rec.commits {
		want, err := core.EncodeDocument(c.Doc)
		if err != nil {
			t.Fatal(err)
		}
		if c.Body == nil {
			t.Fatalf("v%d: commit without its encoded document", c.Doc.Version)
		}
		if !bytes.Equal(c.Body, want) {
			t.Fatalf("v%d: Body\n%s\nis not the stored form\n%s", c.Doc.Version, c.Body, want)
		}
	}
}
