package pgstore

import (
	"crypto/rand"
	"encoding/binary"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/ca/store"
)

// BenchmarkUpdate commits one Update putting 100 keys of 1 KiB, like a
// ledger batch: sequential keys, the coordinator lock, one flush and
// commit, fsync'd by PostgreSQL.
func BenchmarkUpdate(b *testing.B) {
	db, _ := newDB(b)
	value := make([]byte, 1024)
	rand.Read(value)
	var seq uint64
	ctx := ctxT(b, time.Hour)
	b.SetBytes(100 * 1024)
	b.ReportAllocs()
	for b.Loop() {
		err := db.Update(ctx, func(tx store.Tx) error {
			bk, err := tx.CreateBucketIfNotExists([]byte("leaves"))
			if err != nil {
				return err
			}
			for range 100 {
				seq++
				if err := bk.Put(binary.BigEndian.AppendUint64(nil, seq), value); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkViewGet is a View reading one key of 10,000.
func BenchmarkViewGet(b *testing.B) {
	db, _ := newDB(b)
	value := make([]byte, 1024)
	const n = 10000
	ctx := ctxT(b, time.Hour)
	for i := 0; i < n; i += 1000 {
		err := db.Update(ctx, func(tx store.Tx) error {
			bk, err := tx.CreateBucketIfNotExists([]byte("b"))
			if err != nil {
				return err
			}
			for j := i; j < i+1000; j++ {
				if err := bk.Put(binary.BigEndian.AppendUint64(nil, uint64(j)), value); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	var i uint64
	b.ReportAllocs()
	for b.Loop() {
		i = (i + 7919) % n
		err := db.View(ctx, func(tx store.Tx) error {
			if v := tx.Bucket([]byte("b")).Get(binary.BigEndian.AppendUint64(nil, i)); len(v) != len(value) {
				b.Fatalf("key %d: %d bytes", i, len(v))
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}
