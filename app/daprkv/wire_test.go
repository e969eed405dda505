package daprkv_test

import (
	"context"
	"errors"
	"reflect"
	"testing"

	dapr "github.com/dapr/go-sdk/client"

	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/daprkv"
	"github.com/open-autoglm/autoglm/app/kv"
)

// wire records the calls the adapter makes; the methods it does not
// override are not expected.
type wire struct {
	daprkv.Client
	storeType string
	metadata  int
	ops       []*dapr.StateOperation
	meta      map[string]string
	bulk      []*dapr.BulkStateItem
	txErr     error
}

func (w *wire) GetMetadata(context.Context) (*dapr.GetMetadataResponse, error) {
	w.metadata++
	return &dapr.GetMetadataResponse{RegisteredComponents: []*dapr.MetadataRegisteredComponents{{Name: "store", Type: w.storeType}}}, nil
}

func (w *wire) ExecuteStateTransaction(_ context.Context, store string, meta map[string]string, ops []*dapr.StateOperation) error {
	if store != "store" {
		return errors.New("wrong store " + store)
	}
	w.ops, w.meta = ops, meta
	return w.txErr
}

func (w *wire) GetBulkState(_ context.Context, store string, keys []string, meta map[string]string, parallelism int32) ([]*dapr.BulkStateItem, error) {
	return w.bulk, nil
}

// TestTransactWire pins what Transact asks of the sidecar: one transaction
// of upserts, each with first-write concurrency and strong consistency and
// the ETag it was read with (none for a create), and no metadata; the
// store's type is asked once.
func TestTransactWire(t *testing.T) {
	w := &wire{storeType: "state.sqlite"}
	s := daprkv.New(w, "store", "")
	ctx := context.Background()
	if err := s.Transact(ctx, []kv.Write{{Key: "a", Value: []byte("1"), ETag: "7"}, {Key: "b", Value: []byte("2")}}); err != nil {
		t.Fatal(err)
	}
	opts := &dapr.StateOptions{Concurrency: dapr.StateConcurrencyFirstWrite, Consistency: dapr.StateConsistencyStrong}
	want := []*dapr.StateOperation{
		{Type: dapr.StateOperationTypeUpsert, Item: &dapr.SetStateItem{Key: "a", Value: []byte("1"), Etag: &dapr.ETag{Value: "7"}, Options: opts}},
		{Type: dapr.StateOperationTypeUpsert, Item: &dapr.SetStateItem{Key: "b", Value: []byte("2"), Options: opts}},
	}
	if !reflect.DeepEqual(w.ops, want) || w.meta != nil {
		t.Fatalf("transaction %+v %v, want %+v", w.ops, w.meta, want)
	}
	w.txErr = errors.New("rpc error: code = Aborted desc = possible etag mismatch")
	if err := s.Transact(ctx, []kv.Write{{Key: "a", Value: []byte("1"), ETag: "7"}}); !errors.Is(err, core.ErrVersionConflict) {
		t.Fatalf("etag mismatch: %v, want a version conflict", err)
	}
	if w.metadata != 1 {
		t.Fatalf("metadata asked %d times, want once", w.metadata)
	}
}

// TestGetManyOrder: records come back in the order of the keys asked for,
// missing ones as zero Items, whatever order the sidecar answers in; a key
// the store could not read fails the read rather than reading as missing.
func TestGetManyOrder(t *testing.T) {
	w := &wire{bulk: []*dapr.BulkStateItem{{Key: "c", Value: []byte("3"), Etag: "9"}, {Key: "b"}, {Key: "a", Value: []byte("1"), Etag: "8"}}}
	s := daprkv.New(w, "store", "")
	got, err := s.GetMany(context.Background(), []string{"a", "b", "c", "d"})
	want := []kv.Item{{Value: []byte("1"), ETag: "8"}, {}, {Value: []byte("3"), ETag: "9"}, {}}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("GetMany = %+v %v, want %+v", got, err, want)
	}
	w.bulk = append(w.bulk, &dapr.BulkStateItem{Key: "d", Error: "connection refused"})
	if _, err := s.GetMany(context.Background(), []string{"a", "d"}); !errors.Is(err, core.ErrUnavailable) {
		t.Fatalf("a key that failed: %v, want unavailable", err)
	}
}
