package daprstore_test

import (
	"context"
	"testing"
	"time"

	dapr "github.com/dapr/go-sdk/client"
	"github.com/google/uuid"

	"github.com/open-autoglm/autoglm/app/config"
	"github.com/open-autoglm/autoglm/app/internal/daprtest"
)

// TestTransactionRollback pins what Commit's choice between one
// transaction and separate writes rests on: PostgreSQL rolls a state
// transaction back as a whole when one ETag no longer matches, Redis
// (MULTI/EXEC) applies the other operations anyway.
func TestTransactionRollback(t *testing.T) {
	daprtest.OnProfiles(t, []string{"postgres", "redis"}, func(t *testing.T, r *daprtest.Replica) {
		rolledBack := r.Profile() == "postgres"
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cl := r.DaprClient(t)
		store := config.DefaultStateStore
		key, fresh := "rb:"+uuid.NewString()[:8], "rb:"+uuid.NewString()[:8]
		if err := cl.SaveState(ctx, store, key, []byte(`{"v":1}`), nil); err != nil {
			t.Fatal(err)
		}
		item, err := cl.GetState(ctx, store, key, nil)
		if err != nil {
			t.Fatal(err)
		}
		stale := item.Etag
		if err := cl.SaveStateWithETag(ctx, store, key, []byte(`{"v":2}`), stale, nil); err != nil {
			t.Fatal(err)
		}
		err = cl.ExecuteStateTransaction(ctx, store, nil, []*dapr.StateOperation{
			{Type: dapr.StateOperationTypeUpsert, Item: &dapr.SetStateItem{Key: fresh, Value: []byte(`{"x":1}`)}},
			// The SDK's default options are last-write, under which Redis
			// ignores the ETag; daprstore always asks for first-write.
			{Type: dapr.StateOperationTypeUpsert, Item: &dapr.SetStateItem{Key: key, Value: []byte(`{"v":3}`), Etag: &dapr.ETag{Value: stale},
				Options: &dapr.StateOptions{Concurrency: dapr.StateConcurrencyFirstWrite}}},
		})
		if err == nil {
			t.Fatal("transaction with a stale ETag succeeded")
		}
		got, err := cl.GetState(ctx, store, fresh, nil)
		if err != nil {
			t.Fatal(err)
		}
		if written := len(got.Value) > 0; written == rolledBack {
			t.Fatalf("%s: the other write of a failed transaction written: %v, want %v", r.Profile(), written, !rolledBack)
		}
		if doc, _ := cl.GetState(ctx, store, key, nil); string(doc.Value) != `{"v":2}` {
			t.Fatalf("guarded key: %s", doc.Value)
		}
	})
}
