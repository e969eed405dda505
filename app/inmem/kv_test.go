package inmem_test

import (
	"context"
	"testing"

	"github.com/open-autoglm/autoglm/app/inmem"
	"github.com/open-autoglm/autoglm/app/internal/kvtest"
)

// TestTransact holds the in-memory adapter to the port's transactions.
func TestTransact(t *testing.T) {
	kvtest.Transact(t, context.Background(), inmem.NewState(), "kv")
}
