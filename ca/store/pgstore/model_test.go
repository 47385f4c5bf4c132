package pgstore

import (
	"bytes"
	crand "crypto/rand"
	"errors"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/castellan-dev/castellan/ca/store"
	"github.com/castellan-dev/castellan/ca/store/pgstore/pgtx"
)

// model is the expected content of a bucket.
type model map[string]string

func (m model) from(seek string) []string {
	keys := slices.Sorted(func(yield func(string) bool) {
		for k := range m {
			if k >= seek && !yield(k) {
				return
			}
		}
	})
	return keys
}

// checkCursor walks up to n keys from seek and compares them, and their
// values, with m.
func checkCursor(t *testing.T, b store.Bucket, m model, seek string, n int) {
	t.Helper()
	want := m.from(seek)
	c := b.Cursor()
	k, v := c.Seek([]byte(seek))
	for i := 0; i < n; i++ {
		if i >= len(want) {
			if k != nil {
				t.Fatalf("seek %x, step %d: got %x past the end", seek, i, k)
			}
			return
		}
		if string(k) != want[i] || string(v) != m[want[i]] {
			t.Fatalf("seek %x, step %d: got %x=%q, want %x=%q", seek, i, k, v, want[i], m[want[i]])
		}
		k, v = c.Next()
	}
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	crand.Read(b)
	return b
}

func randomKey(r *rand.Rand) string {
	b := make([]byte, 1+r.IntN(3))
	for i := range b {
		b[i] = []byte{0x00, 0x01, 'a', 'b', 0x7f, 0x80, 0xff}[r.IntN(7)] // bytes.Compare edge cases
	}
	return string(b)
}

// An Update's reads (Get, cursors across several database pages) see its
// own buffered Puts and Deletes merged with the database, in
// bytes.Compare order; after commit a View sees exactly the model.
func TestUpdateReadsItsOwnWritesInKeyOrder(t *testing.T) {
	db, _ := newDB(t)
	r := rand.New(rand.NewPCG(1, 2))
	m := model{}
	for round := range 3 {
		err := db.Update(ctxT(t, 60*time.Second), func(tx store.Tx) error {
			b, err := tx.CreateBucketIfNotExists([]byte("m"))
			if err != nil {
				return err
			}
			for i := range 400 {
				k := randomKey(r)
				switch op := r.IntN(10); {
				case op < 5:
					v := strings.Repeat("v", r.IntN(3)) + k
					if err := b.Put([]byte(k), []byte(v)); err != nil {
						return err
					}
					m[k] = v
				case op < 8:
					if err := b.Delete([]byte(k)); err != nil {
						return err
					}
					delete(m, k)
				case op < 9:
					got := b.Get([]byte(k))
					if want, ok := m[k]; ok != (got != nil) || string(got) != want {
						t.Fatalf("round %d op %d: Get(%x) = %q, want %q (present %v)", round, i, k, got, want, ok)
					}
				default:
					checkCursor(t, b, m, randomKey(r), 1+r.IntN(100))
				}
			}
			checkCursor(t, b, m, "", len(m)+1)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		err = db.View(ctxT(t, 30*time.Second), func(tx store.Tx) error {
			b := tx.Bucket([]byte("m"))
			checkCursor(t, b, m, "", len(m)+1)
			for range 20 {
				checkCursor(t, b, m, randomKey(r), 50)
			}
			var n int
			err := b.ForEach(func(k, v []byte) error {
				if m[string(k)] != string(v) {
					t.Fatalf("ForEach %x=%q, want %q", k, v, m[string(k)])
				}
				n++
				return nil
			})
			if n != len(m) {
				t.Fatalf("ForEach visited %d keys, want %d", n, len(m))
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// A cursor reflects the writes made before it was created; an error from
// fn discards every write.
func TestUpdateErrorDiscardsWrites(t *testing.T) {
	db, _ := newDB(t)
	put(t, db, "b", "k", "v")
	refuse := errors.New("refused")
	err := db.Update(ctxT(t, 10*time.Second), func(tx store.Tx) error {
		b := tx.Bucket([]byte("b"))
		b.Put([]byte("k"), []byte("changed"))
		b.Put([]byte("k2"), nil)
		tx.CreateBucketIfNotExists([]byte("nb"))
		c := b.Cursor()
		b.Put([]byte("k3"), []byte("after the cursor"))
		if k, v := c.First(); string(k) != "k" || string(v) != "changed" {
			t.Errorf("cursor First = %q=%q", k, v)
		}
		if k, v := c.Next(); string(k) != "k2" || v == nil || len(v) != 0 {
			t.Errorf("cursor Next = %q=%q, want k2 with an empty non-nil value", k, v)
		}
		return refuse
	})
	if err != refuse {
		t.Fatalf("Update returned %v, want fn's error as is", err)
	}
	if v, _ := get(t, db, "b", "k"); v != "v" {
		t.Errorf("a refused Update changed k to %q", v)
	}
	if _, ok := get(t, db, "b", "k2"); ok {
		t.Error("a refused Update wrote k2")
	}
	db.View(ctxT(t, 10*time.Second), func(tx store.Tx) error {
		if tx.Bucket([]byte("nb")) != nil {
			t.Error("a refused Update created a bucket")
		}
		return nil
	})
}

// The contract's refusals: writes in a View, empty and oversized keys, a
// Tx kept after fn returned.
func TestRefusals(t *testing.T) {
	db, _ := newDB(t)
	put(t, db, "b", "k", "v")
	db.View(ctxT(t, 10*time.Second), func(tx store.Tx) error {
		if tx.Writable() {
			t.Error("a View is writable")
		}
		if _, err := tx.CreateBucketIfNotExists([]byte("x")); !errors.Is(err, store.ErrReadOnly) {
			t.Errorf("CreateBucketIfNotExists in a View: %v", err)
		}
		b := tx.Bucket([]byte("b"))
		if err := b.Put([]byte("k"), []byte("w")); !errors.Is(err, store.ErrReadOnly) {
			t.Errorf("Put in a View: %v", err)
		}
		if err := b.Delete([]byte("k")); !errors.Is(err, store.ErrReadOnly) {
			t.Errorf("Delete in a View: %v", err)
		}
		if tx.Bucket([]byte("never created")) != nil {
			t.Error("Bucket returned a bucket never created")
		}
		return nil
	})
	var kept store.Bucket
	err := db.Update(ctxT(t, 10*time.Second), func(tx store.Tx) error {
		b := tx.Bucket([]byte("b"))
		kept = b
		if err := b.Put(nil, []byte("v")); err == nil {
			t.Error("Put with an empty key succeeded")
		}
		if err := b.Put(bytes.Repeat([]byte("k"), pgtx.MaxKeySize+1), []byte("v")); err == nil {
			t.Error("Put with an oversized key succeeded")
		}
		if err := b.Put(bytes.Repeat([]byte("k"), pgtx.MaxKeySize), bytes.Repeat([]byte("v"), 1<<20)); err != nil {
			t.Errorf("Put of the largest key: %v", err)
		}
		if _, err := tx.CreateBucketIfNotExists(nil); err == nil {
			t.Error("a bucket with an empty name was created")
		}
		if _, err := tx.CreateBucketIfNotExists(make([]byte, pgtx.MaxBucketNameSize+1)); err == nil {
			t.Error("a bucket with an oversized name was created")
		}
		// The largest bucket name and key, incompressible: one index entry.
		big, err := tx.CreateBucketIfNotExists(randomBytes(pgtx.MaxBucketNameSize))
		if err != nil {
			return err
		}
		return big.Put(randomBytes(pgtx.MaxKeySize), []byte("v"))
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := kept.Put([]byte("late"), nil); err == nil || kept.Get([]byte("k")) != nil {
		t.Error("a bucket kept after its Update still works")
	}
	if v, _ := get(t, db, "b", strings.Repeat("k", pgtx.MaxKeySize)); len(v) != 1<<20 {
		t.Errorf("largest key holds %d bytes", len(v))
	}
}

// Transactions are counted by result, Updates timed.
func TestMetrics(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	c := connect(t, shared.NewDatabase(t), Options{Registry: reg})
	connect(t, shared.NewDatabase(t), Options{Registry: reg}) // a second Conn shares the collectors
	db := keyspaceDB(t, c, "ledger")
	put(t, db, "b", "k", "v")
	db.Update(ctxT(t, 5*time.Second), func(store.Tx) error { return errors.New("no") })
	get(t, db, "b", "k")
	for labels, want := range map[[3]string]float64{
		{"ledger", "update", "ok"}: 1, {"ledger", "update", "error"}: 1, {"ledger", "view", "ok"}: 1,
	} {
		if got := testutil.ToFloat64(c.m.transactions.WithLabelValues(labels[:]...)); got != want {
			t.Errorf("transactions%v = %v, want %v", labels, got, want)
		}
	}
	if n := testutil.CollectAndCount(c.m.updateSeconds); n != 1 {
		t.Errorf("%d update latency series, want 1", n)
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Errorf("metric lint: %v %v", err, problems)
	}
}
