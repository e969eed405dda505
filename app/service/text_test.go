package service_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"

	"github.com/open-autoglm/autoglm/app/client"
	"github.com/open-autoglm/autoglm/app/internal/daprtest"
)

// TestTextTwoClients: two Go clients type into one text field at the same
// place at the same time, through a real replica; both words survive whole
// and both copies equal the stored document, metadata included.
func TestTextTwoClients(t *testing.T) {
	r := daprtest.Start(t, daprtest.Options{Profile: "local"})
	doc := "forms/t-" + uuid.NewString()[:8]
	a := dial(t, r.WSURL(), client.Options{ClientID: "ann"})
	b := dial(t, r.WSURL(), client.Options{ClientID: "bob"})
	da := subscribe(t, a, doc, 0)
	db := subscribe(t, b, doc, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	op, err := a.TextInsert(da, "notes", 0, "[]")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Do(ctx, doc, 0, op); err != nil {
		t.Fatal(err)
	}
	if err := db.WaitVersion(ctx, 1); err != nil {
		t.Fatal(err)
	}
	// Both build their edit on version 1 before either is sent.
	insA, err := a.TextInsert(da, "notes", 1, "hello")
	if err != nil {
		t.Fatal(err)
	}
	insB, err := b.TextInsert(db, "notes", 1, "world")
	if err != nil {
		t.Fatal(err)
	}
	delB, ok, err := client.TextDelete(db, "notes", 1, 1) // "]"
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	ackA, ackB := a.Send(doc, 1, insA), b.Send(doc, 1, insB, delB)
	for _, ch := range []<-chan client.Ack{ackA, ackB} {
		if ack := <-ch; ack.Err != nil {
			t.Fatal(ack.Err)
		}
	}
	if err := da.WaitVersion(ctx, 3); err != nil {
		t.Fatal(err)
	}
	if err := db.WaitVersion(ctx, 3); err != nil {
		t.Fatal(err)
	}
	got, _ := da.Data()["notes"].(string)
	if got != "[worldhello" && got != "[helloworld" {
		t.Fatalf("notes = %q: want both words whole and the bracket deleted", got)
	}
	if d := cmp.Diff(da.Data(), db.Data()); d != "" {
		t.Fatalf("copies differ (-A +B):\n%s", d)
	}
	stored := do(t, "GET", r.URL()+"/v1/docs/"+doc, "")
	if d := cmp.Diff(stored.Body["data"], any(db.Data())); d != "" {
		t.Fatalf("client copy differs from the store (-store +B):\n%s", d)
	}
	if !strings.Contains(stored.Raw, `"_text"`) {
		t.Fatalf("no text metadata stored: %s", stored.Raw)
	}
}
