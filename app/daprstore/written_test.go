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

		d1, err := commitOver(ctx, s, k, core.Stored{}, 1)
		if err != nil {
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
		d2, err := commitOver(ctx, s, k, again, 2)
		if err != nil {
			t.Fatal(err)
		}
		st2, err := other.Load(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := commitOver(ctx, other, k, st2, 3); err != nil {
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
