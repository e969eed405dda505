package daprstore_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	dapr "github.com/dapr/go-sdk/client"

	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/daprstore"
	"github.com/open-autoglm/autoglm/app/merge"
)

// fakeSidecar answers the gRPC calls the store makes; the outbox
// transaction goes to an httptest server standing in for daprd's HTTP API.
type fakeSidecar struct {
	daprstore.Client
	mu      sync.Mutex
	etag    string // the document's current ETag; "" when absent
	grpcTxs int
	outbox  bool
}

func (f *fakeSidecar) GetMetadata(context.Context) (*dapr.GetMetadataResponse, error) {
	md := &dapr.GetMetadataResponse{RegisteredComponents: []*dapr.MetadataRegisteredComponents{{Name: "statestore", Type: "state.sqlite"}}}
	if f.outbox {
		md.RegisteredComponents = append(md.RegisteredComponents, &dapr.MetadataRegisteredComponents{Name: "outbox", Type: "state.sqlite"})
	}
	return md, nil
}

func (f *fakeSidecar) GetState(_ context.Context, _, key string, _ map[string]string) (*dapr.StateItem, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.etag == "" {
		return &dapr.StateItem{Key: key}, nil
	}
	return &dapr.StateItem{Key: key, Value: []byte(`{"v":1}`), Etag: f.etag}, nil
}

func (f *fakeSidecar) ExecuteStateTransaction(context.Context, string, map[string]string, []*dapr.StateOperation) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.grpcTxs++
	return nil
}

func (f *fakeSidecar) SaveBulkState(context.Context, string, ...*dapr.SetStateItem) error { return nil }

type txBody struct {
	Operations []struct {
		Operation string `json:"operation"`
		Request   struct {
			Key         string            `json:"key"`
			Value       json.RawMessage   `json:"value"`
			ETag        string            `json:"etag"`
			Options     map[string]string `json:"options"`
			Metadata    map[string]string `json:"metadata"`
			ContentType string            `json:"contentType"`
		} `json:"request"`
	} `json:"operations"`
}

func TestOutboxCommit(t *testing.T) {
	var (
		mu  sync.Mutex
		txs []txBody
	)
	daprd := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1.0/state/outbox/transaction" || r.Header.Get("dapr-api-token") != "tok" {
			http.Error(w, "wrong call "+r.URL.Path, http.StatusBadRequest)
			return
		}
		b, _ := io.ReadAll(r.Body)
		var tx txBody
		if err := json.Unmarshal(b, &tx); err != nil {
			t.Errorf("transaction body %s: %v", b, err)
		}
		mu.Lock()
		txs = append(txs, tx)
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	defer daprd.Close()

	k := core.Key{Collection: "orders", ID: "o1"}
	ch := core.Change{Doc: "orders/o1", Version: 2, Prev: 1,
		Ops: []merge.FieldOp{{Op: merge.KindSet, Path: "total", Value: json.RawMessage("12")}}}
	commit := core.Commit{Key: k, ETag: "e1", Doc: &core.Document{Key: k, Version: 2, State: merge.NewDoc(), Tail: []core.Change{ch}},
		Changes: []core.Change{ch}, Archive: []core.Change{{Doc: "orders/o1", Version: 1}}}
	events := func(coll string) bool { return coll == "orders" }
	ctx := context.Background()
	// store is a store using the outbox on f, after the transactions of
	// the subtests before are forgotten.
	store := func(f *fakeSidecar) *daprstore.Store {
		mu.Lock()
		txs = nil
		mu.Unlock()
		s := daprstore.New(f, "statestore")
		s.UseOutbox(daprstore.Outbox{Store: "outbox", HTTP: daprd.URL, Token: "tok", Events: events})
		return s
	}

	t.Run("OneTransactionWithProjection", func(t *testing.T) {
		f := &fakeSidecar{etag: "e1", outbox: true}
		s := store(f)
		if !s.OutboxActive(ctx, "orders") || s.OutboxActive(ctx, "notes") {
			t.Fatal("outbox should be active for orders only")
		}
		if err := s.Commit(ctx, commit); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		defer mu.Unlock()
		if len(txs) != 1 || len(txs[0].Operations) != 2 {
			t.Fatalf("transactions %+v", txs)
		}
		doc, proj := txs[0].Operations[0].Request, txs[0].Operations[1].Request
		if doc.Key != "orders:o1" || doc.ETag != "e1" || doc.Options["concurrency"] != "first-write" ||
			doc.Metadata["type"] != "com.autoglm.document.changed" || doc.Metadata["subject"] != "orders/o1" ||
			doc.Metadata["docversion"] != "2" {
			t.Fatalf("document op %+v", doc)
		}
		if proj.Key != doc.Key || proj.Metadata["outbox.projection"] != "true" || proj.ContentType != "application/json" {
			t.Fatalf("projection op %+v", proj)
		}
		var data map[string]any
		_ = json.Unmarshal(proj.Value, &data)
		if data["version"] != 2.0 || data["prev_version"] != 1.0 || data["doc"] != "orders/o1" || data["state"] != nil {
			t.Fatalf("projection carries %s", proj.Value)
		}
		// The archive of the previous commit went through the main store.
		if f.grpcTxs != 1 {
			t.Fatalf("%d transactions on the main store, want the archive", f.grpcTxs)
		}
	})

	t.Run("StaleETagSendsNothing", func(t *testing.T) {
		f := &fakeSidecar{etag: "e2", outbox: true}
		s := store(f)
		err := s.Commit(ctx, commit)
		if !errors.Is(err, core.ErrVersionConflict) {
			t.Fatalf("commit on a changed document: %v", err)
		}
		mu.Lock()
		defer mu.Unlock()
		if len(txs) != 0 {
			t.Fatal("an outbox transaction that must fail was sent")
		}
	})

	t.Run("CompactionWritesNoEvent", func(t *testing.T) {
		f := &fakeSidecar{etag: "e1", outbox: true}
		s := store(f)
		quiet := core.Commit{Key: k, ETag: "e1", Doc: &core.Document{Key: k, Version: 2, State: merge.NewDoc()},
			Archive: []core.Change{ch}}
		if err := s.Commit(ctx, quiet); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		defer mu.Unlock()
		if len(txs) != 0 || f.grpcTxs != 1 {
			t.Fatalf("a commit without changes went through the outbox (%d) or not through the main store (%d)", len(txs), f.grpcTxs)
		}
	})

	t.Run("WithoutComponent", func(t *testing.T) {
		f := &fakeSidecar{etag: "e1"}
		s := store(f)
		if s.OutboxActive(ctx, "orders") {
			t.Fatal("outbox active without its component")
		}
		if err := s.Commit(ctx, commit); err != nil {
			t.Fatal(err)
		}
		if f.grpcTxs != 1 {
			t.Fatalf("the commit should be one transaction on the main store, got %d", f.grpcTxs)
		}
	})
}
