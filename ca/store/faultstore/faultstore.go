// Package faultstore wraps a real store.DB and, on demand, makes it fail
// the way the contract says an unreachable backend fails, for tests of
// the CA's behaviour when its store is down. It also lets a test present a
// bbolt store as shared by several replicas.
//
// While failing: Ping returns an error wrapping store.ErrUnavailable; in a
// transaction, Get returns nil and cursors and ForEach end at once (reads
// that failed); View and Update run fn, then return an error wrapping
// store.ErrUnavailable (and fn's own error, if any), and nothing fn wrote
// is committed. Changed is the wrapped store's.
package faultstore

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/castellan-dev/castellan/ca/store"
)

// DB is a store.DB that can be made to fail. The zero value is not usable;
// use Wrap.
type DB struct {
	store.DB
	shared  bool
	failing atomic.Bool
	failed  chan struct{}
}

var _ store.DB = (*DB)(nil)

// Wrap returns db wrapped, not failing. shared sets what Shared reports
// (true: callers follow Changed as they would on PostgreSQL).
func Wrap(db store.DB, shared bool) *DB {
	return &DB{DB: db, shared: shared, failed: make(chan struct{}, 1)}
}

// Fail makes the store fail (true) or work again (false).
func (d *DB) Fail(on bool) { d.failing.Store(on) }

// Failed returns a channel that receives after a transaction or Ping
// failed (one pending signal at most), so that a test can wait for the
// code under test to have met the failure.
func (d *DB) Failed() <-chan struct{} { return d.failed }

// Shared implements store.DB.
func (d *DB) Shared() bool { return d.shared }

// Ping implements store.DB.
func (d *DB) Ping(ctx context.Context) error {
	if d.failing.Load() {
		return d.fail(nil)
	}
	return d.DB.Ping(ctx)
}

// View implements store.DB.
func (d *DB) View(ctx context.Context, fn func(store.Tx) error) error {
	if !d.failing.Load() {
		return d.DB.View(ctx, fn)
	}
	var fnErr error
	if err := d.DB.View(ctx, func(tx store.Tx) error { fnErr = fn(failingTx{tx}); return nil }); err != nil {
		return err
	}
	return d.fail(fnErr)
}

// Update implements store.DB.
func (d *DB) Update(ctx context.Context, fn func(store.Tx) error) error {
	if !d.failing.Load() {
		return d.DB.Update(ctx, fn)
	}
	var fnErr error
	err := d.DB.Update(ctx, func(tx store.Tx) error {
		fnErr = fn(failingTx{tx})
		return errRollback // whatever fn wrote is not committed
	})
	if !errors.Is(err, errRollback) {
		return err
	}
	return d.fail(fnErr)
}

func (d *DB) fail(fnErr error) error {
	select {
	case d.failed <- struct{}{}:
	default:
	}
	if fnErr != nil {
		return fmt.Errorf("%w: faultstore: injected failure (the transaction returned: %w)", store.ErrUnavailable, fnErr)
	}
	return fmt.Errorf("%w: faultstore: injected failure", store.ErrUnavailable)
}

var errRollback = errors.New("faultstore: rollback")

// failingTx is a transaction whose reads fail.
type failingTx struct{ store.Tx }

func (t failingTx) Bucket(name []byte) store.Bucket {
	if b := t.Tx.Bucket(name); b != nil {
		return bucket{b}
	}
	return nil
}

func (t failingTx) CreateBucketIfNotExists(name []byte) (store.Bucket, error) {
	b, err := t.Tx.CreateBucketIfNotExists(name)
	if err != nil {
		return nil, err
	}
	return bucket{b}, nil
}

// bucket is a bucket whose reads fail; its writes go through (and are
// rolled back with the transaction).
type bucket struct{ store.Bucket }

func (bucket) Get([]byte) []byte                     { return nil }
func (bucket) Cursor() store.Cursor                  { return cursor{} }
func (bucket) ForEach(func(k, v []byte) error) error { return nil }

type cursor struct{}

func (cursor) First() ([]byte, []byte)      { return nil, nil }
func (cursor) Seek([]byte) ([]byte, []byte) { return nil, nil }
func (cursor) Next() ([]byte, []byte)       { return nil, nil }
