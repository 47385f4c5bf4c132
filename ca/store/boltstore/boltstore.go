// Package boltstore implements the store contract (package store) on a
// bbolt file: the embedded default for a CA with one replica. The file's
// single writer lock serializes Updates; a View is a bbolt read
// transaction (a consistent snapshot); an Update returns after bbolt's
// fsync. Changed fires after this process's own commits (nobody else can
// write the file while it is open).
package boltstore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/castellan-dev/castellan/ca/store"
	"github.com/castellan-dev/castellan/internal/boltcheck"
)

// InitialMmapSize is the address space Open maps for a file (1 GiB):
// bbolt must remap a file that outgrows its mapping, and a remap waits for
// every open read transaction.
const InitialMmapSize = 1 << 30

// DB is a store.DB on a bbolt database.
type DB struct {
	db      *bolt.DB
	mu      sync.Mutex
	changed chan struct{}
	closed  bool
}

var _ store.DB = (*DB)(nil)

// Open opens (creating if needed) the bbolt file at path, mode 0600, after
// checking its pages (boltcheck: a damaged file is refused with an error
// wrapping boltcheck.ErrDamaged, never a bbolt panic). It waits at most 5 s
// for another process's lock on the file. The file is mapped with
// InitialMmapSize of address space, so that an Update does not wait for
// open Views to remap a growing file until it is that large.
func Open(path string) (*DB, error) {
	db, err := boltcheck.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second, InitialMmapSize: InitialMmapSize})
	if err != nil {
		return nil, err
	}
	return New(db), nil
}

// New wraps an open bbolt database; Close closes it.
func New(db *bolt.DB) *DB {
	return &DB{db: db, changed: make(chan struct{})}
}

// Bolt returns the underlying database (for file-level tools: integrity
// checks, backups).
func (d *DB) Bolt() *bolt.DB { return d.db }

// View implements store.DB.
func (d *DB) View(ctx context.Context, fn func(store.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	err := d.db.View(func(tx *bolt.Tx) error { return fn(txn{tx}) })
	return d.wrap(err)
}

// Update implements store.DB.
func (d *DB) Update(ctx context.Context, fn func(store.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if d.db.IsReadOnly() {
		return store.ErrReadOnly
	}
	if err := d.db.Update(func(tx *bolt.Tx) error { return fn(txn{tx}) }); err != nil {
		return d.wrap(err)
	}
	d.mu.Lock()
	close(d.changed)
	d.changed = make(chan struct{})
	d.mu.Unlock()
	return nil
}

func (d *DB) wrap(err error) error {
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return fmt.Errorf("%w: %w", store.ErrClosed, err)
	}
	if errors.Is(err, berrors.ErrTxNotWritable) || errors.Is(err, berrors.ErrDatabaseReadOnly) {
		return fmt.Errorf("%w: %w", store.ErrReadOnly, err)
	}
	return err
}

// Changed implements store.DB.
func (d *DB) Changed() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.changed
}

// Ping implements store.DB: it fails only once the DB is closed.
func (d *DB) Ping(context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return store.ErrClosed
	}
	return nil
}

// Shared implements store.DB: a bbolt file has one writer process.
func (d *DB) Shared() bool { return false }

// Close implements store.DB.
func (d *DB) Close() error {
	d.mu.Lock()
	d.closed = true
	d.mu.Unlock()
	return d.db.Close()
}

type txn struct{ tx *bolt.Tx }

func (t txn) Bucket(name []byte) store.Bucket {
	b := t.tx.Bucket(name)
	if b == nil {
		return nil
	}
	return bucket{b}
}

func (t txn) CreateBucketIfNotExists(name []byte) (store.Bucket, error) {
	if !t.tx.Writable() {
		return nil, store.ErrReadOnly
	}
	b, err := t.tx.CreateBucketIfNotExists(name)
	if err != nil {
		return nil, err
	}
	return bucket{b}, nil
}

func (t txn) Writable() bool { return t.tx.Writable() }

type bucket struct{ b *bolt.Bucket }

func (b bucket) Get(key []byte) []byte { return b.b.Get(key) }

func (b bucket) Put(key, value []byte) error {
	if !b.b.Tx().Writable() {
		return store.ErrReadOnly
	}
	if value == nil {
		value = []byte{}
	}
	return b.b.Put(key, value)
}

func (b bucket) Delete(key []byte) error {
	if !b.b.Tx().Writable() {
		return store.ErrReadOnly
	}
	return b.b.Delete(key)
}

func (b bucket) Cursor() store.Cursor { return b.b.Cursor() }

func (b bucket) ForEach(fn func(k, v []byte) error) error { return b.b.ForEach(fn) }

// MarkSequential implements store.Sequential: pages are packed full.
func (b bucket) MarkSequential() { b.b.FillPercent = 1 }

// Buckets returns the names of the file's buckets, in key order (for
// store.Copy: a bbolt file lists its buckets, the contract does not).
func (d *DB) Buckets() ([][]byte, error) {
	var out [][]byte
	err := d.db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, _ *bolt.Bucket) error {
			out = append(out, append([]byte(nil), name...))
			return nil
		})
	})
	return out, err
}
