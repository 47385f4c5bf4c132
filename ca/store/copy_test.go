package store_test

import (
	"context"
	"encoding/binary"
	"path/filepath"
	"strings"
	"testing"

	"github.com/castellan-dev/castellan/ca/store"
	"github.com/castellan-dev/castellan/ca/store/boltstore"
)

func openBolt(t *testing.T) store.DB {
	db, err := boltstore.Open(filepath.Join(t.TempDir(), "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func TestCopyKeepsEveryKeyAndRefusesNonEmpty(t *testing.T) {
	ctx := context.Background()
	src, dst := openBolt(t), openBolt(t)
	const n = store.CopyChunk*2 + 7 // several chunks, one partial
	err := src.Update(ctx, func(tx store.Tx) error {
		for _, name := range []string{"a", "meta", "skipped"} {
			b, err := tx.CreateBucketIfNotExists([]byte(name))
			if err != nil {
				return err
			}
			for i := range n {
				if err := b.Put(binary.BigEndian.AppendUint64(nil, uint64(i)), []byte(name+strings.Repeat("x", i%50))); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	got, err := store.Copy(ctx, dst, src, [][]byte{[]byte("a"), []byte("absent"), []byte("meta")})
	if err != nil || got != 2*n {
		t.Fatalf("Copy = %d, %v; want %d keys", got, err, 2*n)
	}
	err = dst.View(ctx, func(tx store.Tx) error {
		if tx.Bucket([]byte("skipped")) != nil || tx.Bucket([]byte("absent")) != nil {
			t.Error("Copy created a bucket it was not asked for, or one the source lacks")
		}
		return src.View(ctx, func(stx store.Tx) error {
			for _, name := range []string{"a", "meta"} {
				sc, dc := stx.Bucket([]byte(name)).Cursor(), tx.Bucket([]byte(name)).Cursor()
				sk, sv := sc.First()
				dk, dv := dc.First()
				for i := 0; sk != nil || dk != nil; i++ {
					if string(sk) != string(dk) || string(sv) != string(dv) {
						t.Fatalf("bucket %s key %d differs: %x=%q vs %x=%q", name, i, sk, sv, dk, dv)
					}
					sk, sv = sc.Next()
					dk, dv = dc.Next()
				}
			}
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Copy(ctx, dst, src, [][]byte{[]byte("meta")}); err == nil || !strings.Contains(err.Error(), "already has bucket") {
		t.Errorf("Copy into a non-empty destination: %v", err)
	}
}
