package boltcheck

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// sample writes a bbolt file with several pages of keys, a nested bucket,
// an inline bucket and an overflow value, and returns its bytes.
func sample(tb testing.TB, noFreelistSync bool) []byte {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "s.db")
	db, err := bolt.Open(path, 0o600, &bolt.Options{NoFreelistSync: noFreelistSync, PageSize: 4096})
	if err != nil {
		tb.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		b, _ := tx.CreateBucket([]byte("entries"))
		for i := range 300 {
			_ = b.Put(fmt.Appendf(nil, "k%05d", i), bytes.Repeat([]byte{byte(i)}, 40))
		}
		n, _ := b.CreateBucket([]byte("nested"))
		_ = n.Put([]byte("big"), bytes.Repeat([]byte("x"), 9000)) // overflow pages
		in, _ := tx.CreateBucket([]byte("inline"))
		return in.Put([]byte("a"), []byte("b"))
	})
	if err == nil {
		err = db.Update(func(tx *bolt.Tx) error { return tx.Bucket([]byte("entries")).Delete([]byte("k00007")) })
	}
	if err != nil {
		tb.Fatal(err)
	}
	if err := db.Close(); err != nil {
		tb.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	return data
}

func write(t *testing.T, data []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "f.db")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestIntactFilePasses(t *testing.T) {
	for _, nfs := range []bool{false, true} {
		db, err := Open(write(t, sample(t, nfs)), 0o600, &bolt.Options{Timeout: time.Second, NoFreelistSync: nfs})
		if err != nil {
			t.Fatalf("NoFreelistSync=%v: %v", nfs, err)
		}
		db.Close()
	}
}

func TestMissingAndEmptyFilesPass(t *testing.T) {
	if err := Check(filepath.Join(t.TempDir(), "none.db")); err != nil {
		t.Fatal(err)
	}
	if err := Check(write(t, nil)); err != nil {
		t.Fatal(err)
	}
}

// Each damage bbolt would panic or crash on is reported with the file's
// path, and Open never panics, whatever the freelist mode.
func TestDamageIsReportedNeverPanics(t *testing.T) {
	ps := 4096
	u16 := func(off int, v uint16) func([]byte) {
		return func(b []byte) { binary.LittleEndian.PutUint16(b[off:], v) }
	}
	metaField := func(field int, v uint64) func([]byte) { // both metas, checksum fixed
		return func(b []byte) {
			for m := range 2 {
				mb := b[m*ps+16:]
				binary.LittleEndian.PutUint64(mb[field:], v)
				fixSum(mb)
			}
		}
	}
	rootPage := func(b []byte) int { return int(current(b).root) }
	cases := []struct {
		name   string
		damage func([]byte)
		want   string
	}{
		{"root page type", func(b []byte) { u16(rootPage(b)*ps+8, 0)(b) }, "page type 0"},
		{"root element count", func(b []byte) { u16(rootPage(b)*ps+10, 0xFFF0)(b) }, "do not fit"},
		{"root beyond file", metaField(16, 1<<40), "outside the file's pages"},
		{"high-water mark beyond file", metaField(40, 1<<30), "truncated"},
		{"both metas", func(b []byte) { b[16] ^= 0xFF; b[ps+16] ^= 0xFF }, "no valid meta page"},
		{"leaf page in the middle overwritten", func(b []byte) { copy(b[inUseLeaf(t, b)*ps+100:], "garbage garbage garbage") }, "damaged"},
		{"truncated", nil, "truncated"},
	}
	for _, nfs := range []bool{false, true} {
		good := sample(t, nfs)
		for _, tc := range cases {
			t.Run(fmt.Sprintf("%s/nofreelistsync=%v", tc.name, nfs), func(t *testing.T) {
				data := bytes.Clone(good)
				if tc.damage == nil {
					data = data[:int(current(data).hwm-1)*ps]
				} else {
					tc.damage(data)
				}
				path := write(t, data)
				db, err := Open(path, 0o600, &bolt.Options{Timeout: time.Second, NoFreelistSync: nfs})
				if err == nil {
					db.Close()
					t.Fatal("Open accepted a damaged file")
				}
				var de *DamageError
				if !errors.As(err, &de) || !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), path) ||
					!strings.Contains(err.Error(), tc.want) {
					t.Fatalf("error = %v (%T); want a DamageError naming %s and saying %q", err, err, path, tc.want)
				}
			})
		}
	}
}

// current returns the meta bbolt uses in b.
func current(b []byte) meta {
	c := &checker{f: bytes.NewReader(b), size: int64(len(b))}
	m, err := c.readMeta()
	if err != nil {
		panic(err)
	}
	return m
}

// inUseLeaf returns a leaf page of the "entries" bucket with keys on it
// (not the first one), found by walking the intact file.
func inUseLeaf(t *testing.T, b []byte) int {
	c := &checker{f: bytes.NewReader(b), size: int64(len(b)), seen: map[uint64]bool{}}
	c.m = current(b)
	if _, err := c.tree(c.m.root, nil, nil, 0); err != nil {
		t.Fatal(err)
	}
	var leaves []int
	for id := range c.seen {
		off := int(id) * 4096
		if id > 1 && binary.LittleEndian.Uint16(b[off+8:]) == flagLeaf && binary.LittleEndian.Uint16(b[off+10:]) > 20 {
			leaves = append(leaves, int(id))
		}
	}
	if len(leaves) < 2 {
		t.Fatalf("sample has %d full leaves", len(leaves))
	}
	slices.Sort(leaves)
	return leaves[len(leaves)/2]
}

// fixSum recomputes a meta page's checksum (mb starts at the meta).
func fixSum(mb []byte) {
	h := fnvSum(mb[:56])
	binary.LittleEndian.PutUint64(mb[56:], h)
}

func TestGuardTurnsPanicIntoError(t *testing.T) {
	err := Guard(func() error { panic("boom") })
	if !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("Guard = %v", err)
	}
}

// Salvage copies every key it can read from a damaged file into a sound
// one, and lists the damage it skipped.
func TestSalvageCopiesWhatIsLeft(t *testing.T) {
	data := sample(t, true)
	leaf := inUseLeaf(t, data)
	copy(data[leaf*4096+16:], "garbage garbage garbage garbage!")
	src := write(t, data)
	dst := filepath.Join(t.TempDir(), "salvaged.db")
	problems, n, err := Salvage(src, dst)
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 || len(problems) == 0 || problems[0].Page != int64(leaf) || problems[0].Path != src {
		t.Fatalf("problems = %v (%d), want the damaged page %d of %s", problems, n, leaf, src)
	}
	db, err := Open(dst, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatalf("the salvaged file does not pass Check: %v", err)
	}
	defer db.Close()
	err = db.View(func(tx *bolt.Tx) error {
		entries := tx.Bucket([]byte("entries"))
		if entries == nil || tx.Bucket([]byte("inline")) == nil || entries.Bucket([]byte("nested")) == nil {
			t.Fatal("buckets were lost")
		}
		if got := entries.Stats().KeyN; got < 250 || got >= 300 {
			t.Errorf("%d keys salvaged from 299, one damaged leaf lost", got)
		}
		if v := entries.Bucket([]byte("nested")).Get([]byte("big")); len(v) != 9000 {
			t.Errorf("overflow value of %d bytes, want 9000", len(v))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
