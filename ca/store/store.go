// Package store is the storage contract for all of the CA's durable state:
// registration entries, join tokens, agents and bans, revocations,
// certificate records and the Merkle log (and, with CA rotation, the
// authority journal). Every one of them is written in terms of this
// contract, once; each backend implements it:
//
//   - boltstore: a bbolt file, the embedded default for one replica;
//   - pgstore: PostgreSQL, shared by every replica of the CA.
//
// The contract is a transactional, ordered key-value store, the model
// bbolt offers, so that a rule written against it behaves the same on both
// backends. storetest is its conformance suite; every backend must pass it.
//
// # Keyspaces and buckets
//
// A DB is one keyspace (the ledger, the registry, ...); keyspaces sharing
// one PostgreSQL database are independent. A keyspace holds named buckets;
// a bucket maps byte-string keys to byte-string values, ordered by key
// (bytes.Compare). Buckets are created, never deleted. A nil or empty value
// is stored as an empty value (Get returns a non-nil empty slice).
//
// # Atomicity and isolation
//
// View runs a read-only transaction on one consistent snapshot: it sees
// every Update committed (by any replica) before it began and nothing
// committed after. Update runs a read-write transaction: it sees its own
// writes, and Update transactions on one keyspace are serialized across
// every process that shares the store (bbolt: one writer per file;
// PostgreSQL: a coordinator row locked FOR UPDATE at the start of each
// Update), so an Update reads the state left by the previous one and
// nothing can interleave with it. A View never blocks an Update (bbolt
// may make an Update wait for open Views when its file outgrows its
// memory map, see boltstore.InitialMmapSize): never wait for an Update
// while holding a View. All writes of an Update are applied
// together or not at all: if fn returns an error, or the commit fails,
// nothing is written.
//
// # Durability
//
// When Update returns nil its writes are durable (fsync'd by bbolt,
// committed with synchronous_commit by PostgreSQL) and visible to every
// transaction that begins afterwards, on any replica. When Update returns
// an error, its writes may or may not be durable only if the error wraps
// ErrCommitUnknown (the connection was lost during COMMIT); otherwise they
// were not made.
//
// # Failures
//
// A read that fails (the database is unreachable) cannot be reported by
// Get or a Cursor, whose signatures have no error: it makes the
// transaction fail. Get then returns nil and the cursor ends, and View or
// Update returns an error wrapping ErrUnavailable whatever fn returned, so
// a decision taken on a failed read is never committed or reported.
// Callers map ErrUnavailable to gRPC Unavailable.
//
// # Changes
//
// Changed returns a channel closed after the next committed Update of the
// keyspace, by this process or, for a shared backend, by any other replica:
// a shared backend signals other replicas' commits within a second
// (PostgreSQL LISTEN/NOTIFY) and also polls for them (a periodic resync,
// in case a notification was lost). Holders of caches derived from the
// store reload on it.
//
// Values returned by Get and cursors are valid only until the transaction
// ends; copy them to keep them. A Tx must not be used from several
// goroutines, nor after fn returns. DB is safe for concurrent use.
package store

import (
	"context"
	"errors"
	"fmt"
)

// Errors of the contract.
var (
	// ErrUnavailable: the store cannot be reached or failed to read or
	// write; the operation may succeed later.
	ErrUnavailable = errors.New("store: unavailable")
	// ErrCommitUnknown: the commit's outcome is unknown (the connection
	// was lost while committing). Wraps ErrUnavailable.
	ErrCommitUnknown = fmt.Errorf("%w: commit outcome unknown", ErrUnavailable)
	// ErrClosed: the DB was closed.
	ErrClosed = errors.New("store: closed")
	// ErrReadOnly: a write in a read-only transaction or on a read-only DB.
	ErrReadOnly = errors.New("store: read-only")
)

// DB is one keyspace of the CA's store.
type DB interface {
	// View runs fn in a read-only transaction (see the package comment).
	View(ctx context.Context, fn func(Tx) error) error
	// Update runs fn in a read-write transaction (see the package
	// comment). fn is run at most once.
	Update(ctx context.Context, fn func(Tx) error) error
	// Changed returns a channel closed after the next committed Update of
	// this keyspace by any replica. Call it again after it fires.
	Changed() <-chan struct{}
	// Ping checks that the store can be reached (readiness).
	Ping(ctx context.Context) error
	// Shared reports whether other processes may write the keyspace
	// (PostgreSQL): caches must then follow Changed, not only their own
	// writes.
	Shared() bool
	// Close releases the DB. Transactions running finish first.
	Close() error
}

// Tx is a transaction on a DB.
type Tx interface {
	// Bucket returns the named bucket, or nil if it does not exist.
	Bucket(name []byte) Bucket
	// CreateBucketIfNotExists returns the named bucket, creating it.
	// ErrReadOnly in a View.
	CreateBucketIfNotExists(name []byte) (Bucket, error)
	// Writable reports whether the transaction is an Update.
	Writable() bool
}

// Bucket is an ordered map of keys to values within a transaction.
type Bucket interface {
	// Get returns the value of key, or nil if there is none.
	Get(key []byte) []byte
	// Put sets key to value. key must not be empty. ErrReadOnly in a View.
	Put(key, value []byte) error
	// Delete removes key (no error if it is absent). ErrReadOnly in a View.
	Delete(key []byte) error
	// Cursor returns a cursor over the bucket in key order, reflecting the
	// transaction's own writes made before it was created.
	Cursor() Cursor
	// ForEach calls fn for every key in order until fn returns an error,
	// which it returns. fn must not modify the bucket.
	ForEach(fn func(k, v []byte) error) error
}

// Cursor walks a bucket in key order. Each method returns nil, nil past
// the end.
type Cursor interface {
	// First moves to the first key.
	First() (k, v []byte)
	// Seek moves to the first key >= seek.
	Seek(seek []byte) (k, v []byte)
	// Next moves to the next key.
	Next() (k, v []byte)
}

// Sequential is implemented by buckets that can be told their keys are
// appended in increasing order (bbolt then packs pages full). Callers use
// it through MarkSequential.
type Sequential interface {
	MarkSequential()
}

// MarkSequential tells b, if its backend cares, that keys are put in
// increasing order.
func MarkSequential(b Bucket) {
	if s, ok := b.(Sequential); ok {
		s.MarkSequential()
	}
}
