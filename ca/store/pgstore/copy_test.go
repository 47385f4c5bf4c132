package pgstore

import (
	"bytes"
	"encoding/binary"
	"path/filepath"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/ca/store"
	"github.com/castellan-dev/castellan/ca/store/boltstore"
)

// dump reads every bucket of names, key=value in order.
func dump(t *testing.T, db store.DB, names [][]byte) [][2][]byte {
	t.Helper()
	var out [][2][]byte
	err := db.View(ctxT(t, time.Minute), func(tx store.Tx) error {
		for _, n := range names {
			b := tx.Bucket(n)
			if b == nil {
				t.Fatalf("bucket %q missing", n)
			}
			c := b.Cursor()
			for k, v := c.First(); k != nil; k, v = c.Next() {
				out = append(out, [2][]byte{append(bytes.Clone(n), k...), bytes.Clone(v)})
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// A bbolt store copied into PostgreSQL (the migration path) arrives byte
// for byte in the same order, across several Updates of the copy; a
// second copy into the now non-empty store is refused.
func TestCopyFromBoltKeepsEveryByte(t *testing.T) {
	src, err := boltstore.Open(filepath.Join(t.TempDir(), "ledger.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	names := [][]byte{[]byte("leaves"), {0x00, 0xff}, []byte("meta")}
	err = src.Update(ctxT(t, time.Minute), func(tx store.Tx) error {
		for i, n := range names {
			b, err := tx.CreateBucketIfNotExists(n)
			if err != nil {
				return err
			}
			for j := range (i + 1) * store.CopyChunk * 3 / 2 { // crosses Update chunks
				v := bytes.Repeat([]byte{byte(j), 0x00, 0xff}, j%50)
				if err := b.Put(binary.BigEndian.AppendUint32([]byte{0xff, 0x00}[:j%3], uint32(j)), v); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	dst, _ := newDB(t)
	n, err := store.Copy(ctxT(t, 2*time.Minute), dst, src, names)
	if err != nil {
		t.Fatal(err)
	}
	want, got := dump(t, src, names), dump(t, dst, names)
	if n != len(want) || len(got) != len(want) {
		t.Fatalf("copied %d, read back %d, source holds %d", n, len(got), len(want))
	}
	for i := range want {
		if !bytes.Equal(got[i][0], want[i][0]) || !bytes.Equal(got[i][1], want[i][1]) {
			t.Fatalf("entry %d: %x=%x, want %x=%x", i, got[i][0], got[i][1], want[i][0], want[i][1])
		}
	}
	if _, err := store.Copy(ctxT(t, time.Minute), dst, src, names); err == nil {
		t.Fatal("a copy into a non-empty store was accepted")
	}
}
