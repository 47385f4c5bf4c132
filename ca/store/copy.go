package store

import (
	"bytes"
	"context"
	"fmt"
)

// CopyChunk is how many keys Copy writes per destination Update.
const CopyChunk = 2000

// Copy copies the named buckets of src into dst, keys and values byte for
// byte (a bbolt ledger copied to PostgreSQL keeps every leaf hash, so
// proofs from old checkpoints still verify). It refuses a destination that
// already holds any of the buckets. Buckets are copied in the order given,
// CopyChunk keys per Update, so a copy interrupted half-way leaves the
// destination partly written: give the bucket that marks a store as
// initialized (the ledger's meta) last, and start again on an empty
// destination. Copy reads src in one View: the copy is one snapshot.
func Copy(ctx context.Context, dst, src DB, buckets [][]byte) (int, error) {
	if err := dst.View(ctx, func(tx Tx) error {
		for _, name := range buckets {
			if tx.Bucket(name) != nil {
				return fmt.Errorf("store: copy: the destination already has bucket %q; copy into an empty store", name)
			}
		}
		return nil
	}); err != nil {
		return 0, err
	}
	total := 0
	err := src.View(ctx, func(stx Tx) error {
		for _, name := range buckets {
			n, err := copyBucket(ctx, dst, stx, name)
			total += n
			if err != nil {
				return fmt.Errorf("store: copy bucket %q: %w", name, err)
			}
		}
		return nil
	})
	return total, err
}

// copyBucket copies one bucket of the source transaction into dst.
func copyBucket(ctx context.Context, dst DB, stx Tx, name []byte) (int, error) {
	b := stx.Bucket(name)
	if b == nil {
		return 0, nil
	}
	c := b.Cursor()
	k, v := c.First()
	n := 0
	for first := true; first || k != nil; first = false {
		err := dst.Update(ctx, func(tx Tx) error {
			db, err := tx.CreateBucketIfNotExists(name)
			if err != nil {
				return err
			}
			MarkSequential(db)
			for i := 0; k != nil && i < CopyChunk; i++ {
				if err := db.Put(bytes.Clone(k), bytes.Clone(v)); err != nil {
					return err
				}
				n++
				k, v = c.Next()
			}
			return nil
		})
		if err != nil {
			return n, err
		}
	}
	return n, nil
}
