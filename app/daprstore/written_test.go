package daprstore_test

import (
	"context"
	"testing"

	dapr "github.com/dapr/go-sdk/client"
	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"

	"github.com/open-autoglm/autoglm/app/config"
	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/daprstore"
)

// After a commit, the next load gets the committed document back without
// decoding it (the sidecar returns the bytes written), exactly once; a
// write by another replica is never hidden by it.
func TestLoadAfterCommitReusesDocument(t *testing.T) {
	eachStore(t, func(t *testing.T, ctx context.Context, c dapr.Client, s *daprstore.Store) {
		other := daprstore.New(c, config.DefaultStateStore) // another replica
		k := core.Key{Collection: "written", ID: uuid.NewString()[:8]}

		d1 := docAt(k, 1)
		d1.Tail = []core.Change{change(k, 1)}
		if err := s.Commit(ctx, core.Commit{Key: k, Doc: d1, Changes: d1.Tail, IndexAdd: true}); err != nil {
			t.Fatal(err)
		}
		st, err := s.Load(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		if st.Doc != d1 {
			t.Fatalf("load after commit decoded the document again (got %p, committed %p)", st.Doc, d1)
		}
		again, err := s.Load(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		if again.Doc == d1 {
			t.Fatal("the committed document was handed out twice")
		}
		if d := cmp.Diff(d1.Data(), again.Doc.Data()); d != "" || again.Doc.Version != 1 {
			t.Fatalf("decoded copy differs (-committed +loaded):\n%s", d)
		}

		// s remembers version 2; another replica writes version 3.
		d2 := docAt(k, 2)
		d2.Tail = []core.Change{change(k, 2)}
		if err := s.Commit(ctx, core.Commit{Key: k, ETag: again.ETag, Doc: d2, Changes: d2.Tail, Archive: again.Doc.Tail}); err != nil {
			t.Fatal(err)
		}
		st2, err := other.Load(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		d3 := docAt(k, 3)
		d3.Tail = []core.Change{change(k, 3)}
		if err := other.Commit(ctx, core.Commit{Key: k, ETag: st2.ETag, Doc: d3, Changes: d3.Tail, Archive: st2.Doc.Tail}); err != nil {
			t.Fatal(err)
		}
		st3, err := s.Load(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		if st3.Doc == d2 || st3.Doc.Version != 3 {
			t.Fatalf("load after another replica's write: version %d (stale copy: %v)", st3.Doc.Version, st3.Doc == d2)
		}
	})
}
