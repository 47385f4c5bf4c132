package faultstore

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/castellan-dev/castellan/ca/store"
	"github.com/castellan-dev/castellan/ca/store/boltstore"
)

// TestFailingStoreBehavesAsTheContractSays: while failing, reads return
// nothing, Update commits nothing, and View, Update and Ping return
// errors wrapping store.ErrUnavailable (and fn's own error); once it
// works again the wrapped store is as it was.
func TestFailingStoreBehavesAsTheContractSays(t *testing.T) {
	bolt, err := boltstore.Open(filepath.Join(t.TempDir(), "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bolt.Close() })
	db := Wrap(bolt, true)
	ctx := context.Background()
	put := func(v string) error {
		return db.Update(ctx, func(tx store.Tx) error {
			b, err := tx.CreateBucketIfNotExists([]byte("b"))
			if err != nil {
				return err
			}
			return b.Put([]byte("k"), []byte(v))
		})
	}
	get := func() (string, error) {
		var got string
		err := db.View(ctx, func(tx store.Tx) error {
			if b := tx.Bucket([]byte("b")); b != nil {
				got = string(b.Get([]byte("k")))
				if k, _ := b.Cursor().First(); k == nil {
					got += " (cursor empty)"
				}
			}
			return nil
		})
		return got, err
	}
	if err := put("before"); err != nil {
		t.Fatal(err)
	}
	if !db.Shared() {
		t.Error("Shared() = false, want what Wrap was given")
	}

	db.Fail(true)
	if err := put("during"); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("Update while failing: %v, want ErrUnavailable", err)
	}
	select {
	case <-db.Failed():
	default:
		t.Error("Failed() did not signal the failed Update")
	}
	if got, err := get(); !errors.Is(err, store.ErrUnavailable) || got != " (cursor empty)" {
		t.Errorf("View while failing: %q, %v; want no data and ErrUnavailable", got, err)
	}
	mine := errors.New("fn's own error")
	if err := db.View(ctx, func(store.Tx) error { return mine }); !errors.Is(err, store.ErrUnavailable) || !errors.Is(err, mine) {
		t.Errorf("View returning an error while failing: %v, want both errors", err)
	}
	if err := db.Ping(ctx); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("Ping while failing: %v", err)
	}

	db.Fail(false)
	if got, err := get(); err != nil || got != "before" {
		t.Errorf("after the failure: %q, %v; want the value from before (the failed Update rolled back)", got, err)
	}
	if err := db.Ping(ctx); err != nil {
		t.Errorf("Ping after the failure: %v", err)
	}
}
