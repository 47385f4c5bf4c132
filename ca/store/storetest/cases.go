package storetest

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/ca/store"
)

var bkt = []byte("b")

// update runs fn in an Update and fails t on error.
func update(t *testing.T, db store.DB, fn func(store.Tx) error) {
	t.Helper()
	if err := db.Update(context.Background(), fn); err != nil {
		t.Fatalf("Update: %v", err)
	}
}

// view runs fn in a View and fails t on error.
func view(t *testing.T, db store.DB, fn func(store.Tx) error) {
	t.Helper()
	if err := db.View(context.Background(), fn); err != nil {
		t.Fatalf("View: %v", err)
	}
}

// put stores key=value in bucket bkt (created if needed).
func put(t *testing.T, db store.DB, key, value string) {
	t.Helper()
	update(t, db, func(tx store.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bkt)
		if err != nil {
			return err
		}
		return b.Put([]byte(key), []byte(value))
	})
}

// get reads key from bucket bkt in a View (nil if absent).
func get(t *testing.T, db store.DB, key string) []byte {
	t.Helper()
	var out []byte
	view(t, db, func(tx store.Tx) error {
		if b := tx.Bucket(bkt); b != nil {
			if v := b.Get([]byte(key)); v != nil {
				out = append([]byte{}, v...)
			}
		}
		return nil
	})
	return out
}

// keys returns every key of bucket bkt walked with a cursor.
func keys(tx store.Tx) []string {
	var out []string
	c := tx.Bucket(bkt).Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		out = append(out, string(k))
	}
	return out
}

func testBuckets(t *testing.T, b Backend) {
	db := b.Open(t)
	view(t, db, func(tx store.Tx) error {
		if tx.Bucket(bkt) != nil {
			t.Error("a bucket never created exists")
		}
		if tx.Writable() {
			t.Error("a View is writable")
		}
		if _, err := tx.CreateBucketIfNotExists(bkt); !errors.Is(err, store.ErrReadOnly) {
			t.Errorf("CreateBucketIfNotExists in a View: %v, want ErrReadOnly", err)
		}
		return nil
	})
	for range 2 { // idempotent
		update(t, db, func(tx store.Tx) error {
			if !tx.Writable() {
				t.Error("an Update is not writable")
			}
			_, err := tx.CreateBucketIfNotExists(bkt)
			return err
		})
	}
	view(t, db, func(tx store.Tx) error {
		if tx.Bucket(bkt) == nil {
			t.Error("a created bucket is missing")
		}
		if tx.Bucket([]byte("other")) != nil {
			t.Error("another bucket appeared")
		}
		return nil
	})
}

func testPutGetDelete(t *testing.T, b Backend) {
	db := b.Open(t)
	put(t, db, "k", "v1")
	put(t, db, "k", "v2")
	put(t, db, "empty", "")
	if got := get(t, db, "k"); string(got) != "v2" {
		t.Errorf("Get after overwrite = %q, want v2", got)
	}
	if got := get(t, db, "empty"); got == nil || len(got) != 0 {
		t.Errorf("Get of an empty value = %v, want a non-nil empty slice", got)
	}
	if got := get(t, db, "absent"); got != nil {
		t.Errorf("Get of an absent key = %q, want nil", got)
	}
	update(t, db, func(tx store.Tx) error {
		if err := tx.Bucket(bkt).Delete([]byte("absent")); err != nil {
			t.Errorf("Delete of an absent key: %v", err)
		}
		return tx.Bucket(bkt).Delete([]byte("k"))
	})
	if got := get(t, db, "k"); got != nil {
		t.Errorf("Get after Delete = %q, want nil", got)
	}
	update(t, db, func(tx store.Tx) error { // nil value stored as empty
		return tx.Bucket(bkt).Put([]byte("nil"), nil)
	})
	if got := get(t, db, "nil"); got == nil || len(got) != 0 {
		t.Errorf("Get of a value put as nil = %v, want a non-nil empty slice", got)
	}
}

func testReadOnlyView(t *testing.T, b Backend) {
	db := b.Open(t)
	put(t, db, "k", "v")
	view(t, db, func(tx store.Tx) error {
		if err := tx.Bucket(bkt).Put([]byte("k"), []byte("w")); !errors.Is(err, store.ErrReadOnly) {
			t.Errorf("Put in a View: %v, want ErrReadOnly", err)
		}
		if err := tx.Bucket(bkt).Delete([]byte("k")); !errors.Is(err, store.ErrReadOnly) {
			t.Errorf("Delete in a View: %v, want ErrReadOnly", err)
		}
		return nil
	})
	if got := get(t, db, "k"); string(got) != "v" {
		t.Errorf("after refused writes Get = %q, want v", got)
	}
}

// orderedKeys are in bytes.Compare order, including bytes a text
// collation would misorder.
var orderedKeys = []string{"\x00", "\x00\x00", "\x01", "A", "B", "a", "a\x00", "a\x00\x01", "a\x01", "aa", "b", "\x7f", "\x80", "\xff", "\xff\xff"}

func testKeyOrder(t *testing.T, b Backend) {
	db := b.Open(t)
	update(t, db, func(tx store.Tx) error {
		bk, err := tx.CreateBucketIfNotExists(bkt)
		if err != nil {
			return err
		}
		for i := len(orderedKeys) - 1; i >= 0; i-- {
			if err := bk.Put([]byte(orderedKeys[i]), []byte{byte(i)}); err != nil {
				return err
			}
		}
		return nil
	})
	view(t, db, func(tx store.Tx) error {
		got := keys(tx)
		if fmt.Sprintf("%q", got) != fmt.Sprintf("%q", orderedKeys) {
			t.Errorf("cursor order = %q, want %q", got, orderedKeys)
		}
		return nil
	})
}

func testCursorSeek(t *testing.T, b Backend) {
	db := b.Open(t)
	update(t, db, func(tx store.Tx) error {
		bk, err := tx.CreateBucketIfNotExists(bkt)
		if err != nil {
			return err
		}
		if k, v := bk.Cursor().First(); k != nil || v != nil {
			t.Errorf("First on an empty bucket = %q, %q", k, v)
		}
		for _, k := range []string{"b", "d", "f"} {
			if err := bk.Put([]byte(k), []byte("v"+k)); err != nil {
				return err
			}
		}
		return nil
	})
	view(t, db, func(tx store.Tx) error {
		for _, c := range []struct{ seek, want, next string }{
			{"", "b", "d"}, {"a", "b", "d"}, {"b", "b", "d"}, {"c", "d", "f"}, {"f", "f", ""}, {"g", "", ""},
		} {
			cur := tx.Bucket(bkt).Cursor()
			k, v := cur.Seek([]byte(c.seek))
			if string(k) != c.want || (k != nil && string(v) != "v"+c.want) {
				t.Errorf("Seek(%q) = %q, %q; want %q", c.seek, k, v, c.want)
			}
			if k == nil {
				continue
			}
			if k, _ := cur.Next(); string(k) != c.next {
				t.Errorf("Next after Seek(%q) = %q, want %q", c.seek, k, c.next)
			}
		}
		return nil
	})
}

// key8 is an 8-byte big-endian key, as the ledger's log indexes are.
func key8(i int) []byte { return binary.BigEndian.AppendUint64(nil, uint64(i)) }

func testLongScan(t *testing.T, b Backend) {
	const n = 5000 // larger than any backend's fetch page
	db := b.Open(t)
	update(t, db, func(tx store.Tx) error {
		bk, err := tx.CreateBucketIfNotExists(bkt)
		if err != nil {
			return err
		}
		store.MarkSequential(bk)
		for i := range n {
			if err := bk.Put(key8(i), []byte(fmt.Sprint(i))); err != nil {
				return err
			}
		}
		return nil
	})
	view(t, db, func(tx store.Tx) error {
		c := tx.Bucket(bkt).Cursor()
		i := 1234
		for k, v := c.Seek(key8(i)); k != nil; k, v = c.Next() {
			if !bytes.Equal(k, key8(i)) || string(v) != fmt.Sprint(i) {
				t.Fatalf("scan at %d read %x=%q", i, k, v)
			}
			i++
		}
		if i != n {
			t.Errorf("scan ended at %d, want %d", i, n)
		}
		return nil
	})
}

func testForEach(t *testing.T, b Backend) {
	db := b.Open(t)
	for _, k := range []string{"c", "a", "b"} {
		put(t, db, k, "v"+k)
	}
	stop := errors.New("stop")
	view(t, db, func(tx store.Tx) error {
		var seen []string
		err := tx.Bucket(bkt).ForEach(func(k, v []byte) error {
			if string(v) != "v"+string(k) {
				t.Errorf("ForEach value of %q = %q", k, v)
			}
			seen = append(seen, string(k))
			if len(seen) == 2 {
				return stop
			}
			return nil
		})
		if !errors.Is(err, stop) {
			t.Errorf("ForEach returned %v, want fn's error", err)
		}
		if fmt.Sprint(seen) != "[a b]" {
			t.Errorf("ForEach visited %v, want [a b]", seen)
		}
		return nil
	})
}

func testReadYourWrites(t *testing.T, b Backend) {
	db := b.Open(t)
	for _, k := range []string{"a", "c", "e"} {
		put(t, db, k, "old")
	}
	update(t, db, func(tx store.Tx) error {
		bk := tx.Bucket(bkt)
		for _, err := range []error{bk.Put([]byte("b"), []byte("new")), bk.Put([]byte("c"), []byte("new")), bk.Delete([]byte("e")), bk.Put([]byte("f"), nil)} {
			if err != nil {
				return err
			}
		}
		if v := bk.Get([]byte("c")); string(v) != "new" {
			t.Errorf("Get of an own overwrite = %q, want new", v)
		}
		if v := bk.Get([]byte("e")); v != nil {
			t.Errorf("Get of an own delete = %q, want nil", v)
		}
		if got := fmt.Sprint(keys(tx)); got != "[a b c f]" {
			t.Errorf("cursor in the Update = %s, want [a b c f]", got)
		}
		c := bk.Cursor()
		if k, v := c.Seek([]byte("bb")); string(k) != "c" || string(v) != "new" {
			t.Errorf("Seek(bb) = %q, %q; want c, new", k, v)
		}
		return nil
	})
	view(t, db, func(tx store.Tx) error {
		if got := fmt.Sprint(keys(tx)); got != "[a b c f]" {
			t.Errorf("after commit keys = %s, want [a b c f]", got)
		}
		return nil
	})
}

func testFailedUpdate(t *testing.T, b Backend) {
	db := b.Open(t)
	put(t, db, "k", "v")
	boom := errors.New("boom")
	err := db.Update(context.Background(), func(tx store.Tx) error {
		if err := tx.Bucket(bkt).Put([]byte("k"), []byte("changed")); err != nil {
			return err
		}
		if err := tx.Bucket(bkt).Put([]byte("new"), []byte("x")); err != nil {
			return err
		}
		if _, err := tx.CreateBucketIfNotExists([]byte("new-bucket")); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Update returned %v, want fn's error", err)
	}
	if got := get(t, db, "k"); string(got) != "v" {
		t.Errorf("a failed Update changed k to %q", got)
	}
	if got := get(t, db, "new"); got != nil {
		t.Errorf("a failed Update wrote new=%q", got)
	}
	view(t, db, func(tx store.Tx) error {
		if tx.Bucket([]byte("new-bucket")) != nil {
			t.Error("a failed Update created a bucket")
		}
		return nil
	})
}

func testCanceled(t *testing.T, b Backend) {
	db := b.Open(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	ran := false
	err := db.Update(ctx, func(tx store.Tx) error {
		ran = true
		_, err := tx.CreateBucketIfNotExists(bkt)
		return err
	})
	if err == nil {
		t.Fatal("Update with a canceled context succeeded")
	}
	if ran {
		t.Error("Update ran fn with a canceled context")
	}
	if err := db.View(ctx, func(store.Tx) error { return nil }); err == nil {
		t.Error("View with a canceled context succeeded")
	}
}

func testSnapshot(t *testing.T, b Backend) {
	db := b.Open(t)
	put(t, db, "k", "before")
	committed := make(chan error, 1)
	view(t, db, func(tx store.Tx) error {
		if v := tx.Bucket(bkt).Get([]byte("k")); string(v) != "before" {
			t.Errorf("View read %q, want before", v)
		}
		go func() {
			committed <- db.Update(context.Background(), func(tx store.Tx) error {
				if err := tx.Bucket(bkt).Put([]byte("k"), []byte("after")); err != nil {
					return err
				}
				return tx.Bucket(bkt).Put([]byte("k2"), []byte("after"))
			})
		}()
		select {
		case err := <-committed:
			if err != nil {
				t.Errorf("Update beside a View: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("an Update could not commit while a View was open")
		}
		if v := tx.Bucket(bkt).Get([]byte("k")); string(v) != "before" {
			t.Errorf("View saw a later commit: k=%q", v)
		}
		if got := fmt.Sprint(keys(tx)); got != "[k]" {
			t.Errorf("View's cursor saw a later commit: %s", got)
		}
		return nil
	})
	if got := get(t, db, "k"); string(got) != "after" {
		t.Errorf("a later View read %q, want after", got)
	}
}

// testSerialized increments one counter from many goroutines (through two
// replicas when replica is set): serialized Updates lose no increment.
func testSerialized(t *testing.T, b Backend, replica bool) {
	const workers, each = 4, 50
	db := b.Open(t)
	dbs := []store.DB{db, db}
	if replica {
		dbs[1] = b.Replica(t, db)
	}
	put(t, db, "n", "\x00\x00\x00\x00\x00\x00\x00\x00")
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				err := dbs[w%2].Update(context.Background(), func(tx store.Tx) error {
					n := binary.BigEndian.Uint64(tx.Bucket(bkt).Get([]byte("n")))
					return tx.Bucket(bkt).Put([]byte("n"), binary.BigEndian.AppendUint64(nil, n+1))
				})
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("increment: %v", err)
	}
	if n := binary.BigEndian.Uint64(get(t, db, "n")); n != workers*each {
		t.Errorf("counter = %d after %d increments: Updates interleaved", n, workers*each)
	}
}

func testLargeValues(t *testing.T, b Backend) {
	db := b.Open(t)
	big := bytes.Repeat([]byte{0xa5, 0x00, 0xff}, 700_000) // 2.1 MB, with NUL bytes
	put(t, db, "big", string(big))
	if got := get(t, db, "big"); !bytes.Equal(got, big) {
		t.Errorf("a %d-byte value read back as %d bytes (or changed)", len(big), len(got))
	}
}

func testChanged(t *testing.T, b Backend) {
	db := b.Open(t)
	ch := db.Changed()
	select {
	case <-ch:
		t.Fatal("Changed fired before any Update")
	default:
	}
	put(t, db, "k", "v")
	select {
	case <-ch:
	case <-time.After(2 * time.Second):
		t.Fatal("Changed did not fire after a committed Update")
	}
	if db.Changed() == ch {
		t.Error("Changed returned the fired channel again")
	}
}

func testDurable(t *testing.T, b Backend) {
	db := b.Open(t)
	put(t, db, "k", "durable")
	db = b.Reopen(t, db)
	if got := get(t, db, "k"); string(got) != "durable" {
		t.Errorf("after reopening Get = %q, want durable", got)
	}
}

func testPing(t *testing.T, b Backend) {
	db := b.Open(t)
	if err := db.Ping(context.Background()); err != nil {
		t.Errorf("Ping of an open DB: %v", err)
	}
}

func testReplicaSees(t *testing.T, b Backend) {
	a := b.Open(t)
	r := b.Replica(t, a)
	put(t, a, "k", "from a")
	if got := get(t, r, "k"); string(got) != "from a" {
		t.Errorf("replica read %q after a committed Update, want the new value", got)
	}
	put(t, r, "k", "from r")
	if got := get(t, a, "k"); string(got) != "from r" {
		t.Errorf("first handle read %q after the replica's commit", got)
	}
}

func testReplicaChanged(t *testing.T, b Backend) {
	a := b.Open(t)
	r := b.Replica(t, a)
	put(t, a, "warm", "x") // the keyspace and bucket exist
	for i := range 3 {
		ch := r.Changed()
		start := time.Now()
		put(t, a, "k", fmt.Sprint(i))
		select {
		case <-ch:
			if d := time.Since(start); d > time.Second {
				t.Errorf("change %d reached the replica after %v, want < 1s", i, d)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("change %d never reached the replica's Changed", i)
		}
	}
}

func testShared(t *testing.T, b Backend) {
	a := b.Open(t)
	if !a.Shared() {
		t.Error("a backend with replicas reports Shared() == false")
	}
}
