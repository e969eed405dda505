// Package kv is the port for the service's non-document state: small JSON
// records guarded by ETags (delivery cursors, registries, dead letters,
// dedup marks), messages published to a topic, and leases. Documents do not
// go through it; they have core.Store.
//
// The port names outcomes, not backends. A write that lost a race to
// another writer fails with an error wrapping core.ErrVersionConflict; a
// backend that cannot be reached fails with one wrapping
// core.ErrUnavailable. Adapters classify once, so a caller never retries an
// outage as if it were a lost race. Update is the one read-modify-write
// loop over the port.
package kv

import (
	"context"
	"time"
)

// Item is a record as read, with the ETag that guards the next write.
type Item struct {
	Value []byte
	ETag  string // empty when the record does not exist
}

// Exists reports whether the record was found.
func (i Item) Exists() bool { return len(i.Value) > 0 }

// Records is a key-value store of small records.
type Records interface {
	// Get reads a record; a missing record is a zero Item and no error.
	Get(ctx context.Context, key string) (Item, error)
	// Put writes a record guarded by the ETag it was read with: it
	// succeeds only if the record still has that ETag, or, with an empty
	// ETag, only if the record does not exist. A lost race fails with
	// core.ErrVersionConflict.
	Put(ctx context.Context, key string, value []byte, etag string) error
	// Set writes a record unguarded (the last write wins). A positive ttl
	// makes the record expire.
	Set(ctx context.Context, key string, value []byte, ttl time.Duration) error
}

// Write is one write of a transaction, guarded by the ETag its record was
// read with: it applies only if the record still has that ETag, or, with
// an empty ETag, only if the record does not exist.
type Write struct {
	Key   string
	Value []byte
	ETag  string
}

// Transactor reads several records at once and writes several records all
// or nothing.
type Transactor interface {
	// GetMany reads the records at keys, in their order; a missing record
	// is a zero Item.
	GetMany(ctx context.Context, keys []string) ([]Item, error)
	// Transact applies writes (each naming a key at most once) as one:
	// every write, or, when any of them fails, none. A lost race on any key (a record that no longer has
	// the ETag it was read with, or a create of a record that exists)
	// fails with core.ErrVersionConflict and writes nothing.
	Transact(ctx context.Context, writes []Write) error
}

// Message is one message for a topic.
type Message struct {
	Pubsub      string // the pub/sub component
	Topic       string
	Body        []byte
	ContentType string
	// Metadata are the broker's per-message settings (for Dapr, e.g.
	// cloudevent.id and cloudevent.type).
	Metadata map[string]string
}

// Publisher publishes messages.
type Publisher interface {
	Publish(ctx context.Context, m Message) error
}

// Locker hands out expiring leases on named resources.
type Locker interface {
	// TryLock takes the lease on resource for owner unless it is held (by
	// anyone, owner included); it reports whether it took it.
	TryLock(ctx context.Context, resource, owner string, ttl time.Duration) (bool, error)
	// Unlock releases owner's lease. It reports false when another owner
	// holds the lease; a lease nobody holds counts as released.
	Unlock(ctx context.Context, resource, owner string) (bool, error)
}

// Components tells which backends are configured.
type Components interface {
	// Has reports whether a component called name of the given kind
	// ("pubsub", "lock", "state") is configured.
	Has(ctx context.Context, name, kind string) (bool, error)
}

// State is the whole port, as adapters provide it.
type State interface {
	Records
	Transactor
	Publisher
	Locker
	Components
}
