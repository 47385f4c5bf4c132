package boltcheck

import (
	"encoding/binary"
	"hash/fnv"
	"os"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func fnvSum(b []byte) uint64 {
	h := fnv.New64a()
	h.Write(b)
	return h.Sum64()
}

// FuzzOpen damages a real bbolt file (a run of bytes written at an offset,
// meta checksums optionally repaired so the damage reaches the tree) and
// opens it. Open must either fail with a *DamageError or succeed; after
// success, bbolt must walk every key without panicking (no Guard here: a
// panic fails the fuzz run).
func FuzzOpen(f *testing.F) {
	f.Add(uint32(2*4096+8), []byte{0, 0}, false, false)
	f.Add(uint32(3*4096+10), []byte{0xff, 0xff}, true, true)
	f.Add(uint32(16+16), []byte{9, 0, 0, 0, 0, 0, 0, 0}, true, false)
	f.Add(uint32(5*4096+100), []byte("garbage in the middle of a page"), false, true)
	goods := map[bool][]byte{false: sample(f, false), true: sample(f, true)}
	f.Fuzz(func(t *testing.T, off uint32, patch []byte, fixMeta, nfs bool) {
		defer failIfSlow(t, time.Now())
		data := append([]byte(nil), goods[nfs]...)
		at := int(off % uint32(len(data)))
		copy(data[at:], patch)
		if fixMeta {
			for m := range 2 {
				mb := data[m*4096+16:]
				binary.LittleEndian.PutUint64(mb[56:], fnvSum(mb[:56]))
			}
		}
		path := filepath.Join(t.TempDir(), "f.db")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		db, err := Open(path, 0o600, &bolt.Options{Timeout: time.Second, NoFreelistSync: nfs})
		if err != nil {
			salvageAndRead(t, path)
			return
		}
		defer db.Close()
		_ = db.View(func(tx *bolt.Tx) error { return walkAll(tx) })
		_ = db.Update(func(tx *bolt.Tx) error {
			b, err := tx.CreateBucketIfNotExists([]byte("entries"))
			if err != nil {
				return err
			}
			return b.Put([]byte("new"), []byte("value"))
		})
	})
}

// failIfSlow fails an input that took more than 10s: a damaged file must
// not make the checker (or bbolt after it) loop.
func failIfSlow(t *testing.T, start time.Time) {
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("one input took %s", d)
	}
}

// salvageAndRead salvages path and reads the copy with bbolt, unguarded.
func salvageAndRead(t *testing.T, path string) {
	dst := filepath.Join(t.TempDir(), "salvaged.db")
	if _, _, err := Salvage(path, dst); err != nil {
		return
	}
	db, err := bolt.Open(dst, 0o600, &bolt.Options{Timeout: time.Second, ReadOnly: true})
	if err != nil {
		t.Fatalf("salvaged file does not open: %v", err)
	}
	defer db.Close()
	if err := db.View(walkAll); err != nil {
		t.Fatalf("salvaged file does not read: %v", err)
	}
	if err := Check(dst); err != nil {
		t.Fatalf("salvaged file fails Check: %v", err)
	}
}

func walkAll(tx *bolt.Tx) error {
	var visit func(b *bolt.Bucket) error
	visit = func(b *bolt.Bucket) error {
		return b.ForEach(func(k, v []byte) error {
			if v == nil {
				if nb := b.Bucket(k); nb != nil {
					return visit(nb)
				}
			}
			return nil
		})
	}
	return tx.ForEach(func(_ []byte, b *bolt.Bucket) error { return visit(b) })
}
