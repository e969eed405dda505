// Package clienttest opens Go clients for tests: a failed dial or
// subscription fails the test, and a client is closed when its test ends.
package clienttest

import (
	"context"
	"testing"

	"github.com/open-autoglm/autoglm/app/client"
)

// Dial connects a client to the sync endpoint url within ctx; it is closed
// when the test ends.
func Dial(t testing.TB, ctx context.Context, url string, opt client.Options) *client.Client {
	t.Helper()
	c, err := client.Dial(ctx, url, opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// Subscribe subscribes c to doc from version since within ctx.
func Subscribe(t testing.TB, ctx context.Context, c *client.Client, doc string, since int64) *client.Doc {
	t.Helper()
	d, err := c.Subscribe(ctx, doc, since)
	if err != nil {
		t.Fatalf("subscribe %s: %v", doc, err)
	}
	return d
}

// Watch dials url, subscribes to doc and waits, within ctx, until the copy
// is at version v or later.
func Watch(t testing.TB, ctx context.Context, url string, opt client.Options, doc string, v int64) *client.Doc {
	t.Helper()
	d := Subscribe(t, ctx, Dial(t, ctx, url, opt), doc, 0)
	if err := d.WaitVersion(ctx, v); err != nil {
		t.Fatalf("%s never reached version %d: %v", doc, v, err)
	}
	return d
}
