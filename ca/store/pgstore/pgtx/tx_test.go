package pgtx

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/castellan-dev/castellan/ca/store"
)

// A bucket seen at a version is trusted by snapshots at that version or
// later only, and the earliest version seen wins.
func TestKnownBucketsTrustOnlyLaterSnapshots(t *testing.T) {
	var k KnownBuckets
	if k.known("b", 100) {
		t.Fatal("an unseen bucket is known")
	}
	k.saw("b", 5)
	if k.known("b", 4) || !k.known("b", 5) || !k.known("b", 9) {
		t.Fatal("a bucket seen at 5 must be known from 5 on only")
	}
	k.saw("b", 7)
	k.saw("b", 3)
	if !k.known("b", 3) {
		t.Fatal("seeing a bucket earlier did not lower its version")
	}
}

// The Tx's writes wait in its overlay: reads see them without the
// database, refusals need none, and Queue adds them to the commit batch
// in key order. No connection is given: any database access would panic.
func TestOverlayServesReadsAndQueuesWritesInOrder(t *testing.T) {
	var known KnownBuckets
	known.saw("b", 1)
	tx := New(context.Background(), nil, "ledger", &known, 1, true)
	b := tx.Bucket([]byte("b"))
	if b == nil {
		t.Fatal("a known bucket needs no query")
	}
	for _, k := range []string{"k2", "k1", "k3"} {
		if err := b.Put([]byte(k), []byte("v"+k)); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Delete([]byte("k3")); err != nil {
		t.Fatal(err)
	}
	if got := b.Get([]byte("k1")); string(got) != "vk1" {
		t.Fatalf("Get(k1) = %q, want the overlay's vk1", got)
	}
	if got := b.Get([]byte("k3")); got != nil {
		t.Fatalf("Get(k3) after Delete = %q", got)
	}
	if err := b.Put(nil, []byte("v")); !errors.Is(err, errNoKey) {
		t.Fatalf("Put of an empty key: %v", err)
	}
	if err := b.Put(bytes.Repeat([]byte("k"), MaxKeySize+1), nil); err == nil {
		t.Fatal("Put of a key over MaxKeySize succeeded")
	}
	if tx.Empty() {
		t.Fatal("a Tx with writes is Empty")
	}
	batch := &pgx.Batch{}
	tx.Queue(batch)
	if len(batch.QueuedQueries) != 2 {
		t.Fatalf("Queue added %d statements, want a put and a delete", len(batch.QueuedQueries))
	}
	put, del := batch.QueuedQueries[0], batch.QueuedQueries[1]
	if put.SQL != sqlPut || del.SQL != sqlDelete {
		t.Fatalf("statements %q, %q", put.SQL, del.SQL)
	}
	if keys := put.Arguments[2].([][]byte); !slices.EqualFunc(keys, [][]byte{[]byte("k1"), []byte("k2")}, bytes.Equal) {
		t.Fatalf("put keys %q, want k1, k2 in order", keys)
	}
	if keys := del.Arguments[2].([][]byte); len(keys) != 1 || string(keys[0]) != "k3" {
		t.Fatalf("deleted keys %q, want k3", keys)
	}
	tx.End()
	if err := b.Put([]byte("k4"), nil); !errors.Is(err, errTxDone) {
		t.Fatalf("Put after End: %v, want errTxDone", err)
	}
	if b.Get([]byte("k1")) != nil || tx.Bucket([]byte("b")) != nil {
		t.Fatal("reads after End return data")
	}
}

// A View refuses every write, and bucket names are checked before any
// query.
func TestRefusalsNeedNoDatabase(t *testing.T) {
	view := New(context.Background(), nil, "ledger", &KnownBuckets{}, 1, false)
	if _, err := view.CreateBucketIfNotExists([]byte("b")); !errors.Is(err, store.ErrReadOnly) {
		t.Fatalf("CreateBucketIfNotExists in a View: %v, want store.ErrReadOnly", err)
	}
	update := New(context.Background(), nil, "ledger", &KnownBuckets{}, 1, true)
	if _, err := update.CreateBucketIfNotExists(nil); !errors.Is(err, errNoBucket) {
		t.Fatalf("empty bucket name: %v", err)
	}
	if _, err := update.CreateBucketIfNotExists(make([]byte, MaxBucketNameSize+1)); err == nil {
		t.Fatal("a bucket name over MaxBucketNameSize was accepted")
	}
	if !update.Empty() {
		t.Fatal("refused writes made the Tx non-empty")
	}
}
