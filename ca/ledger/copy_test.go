package ledger

import (
	"bytes"
	"context"
	"path/filepath"
	"slices"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// populated returns a closed bbolt ledger at path holding every kind of
// bucket (entries, indexes, a lineage, an agent record and a ban).
func populated(t *testing.T, clock *fakeClock) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ledger.db")
	l, err := Open(path, Options{Clock: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	exp := clock.Now().Add(time.Hour)
	parent := certEvent(1, "spiffe://td/castellan/agent/n1", "n1", exp)
	child := certEvent(2, "spiffe://td/castellan/agent/n1", "n1", exp)
	child.Kind, child.Parent = KindRenewal, parent.Serial
	if _, err := l.Append(ctx, parent, child); err != nil {
		t.Fatal(err)
	}
	fill(t, l, 50, exp)
	if _, err := l.Ban(ctx, "n1", "test"); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Agents(ctx); err != nil { // waits for the indexes
		t.Fatal(err)
	}
	if _, err := l.Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestBucketsNamesEveryBucketMetaLast: a copy made with Buckets misses
// nothing a ledger stores, and writes meta (which marks a store as
// holding a ledger) last.
func TestBucketsNamesEveryBucketMetaLast(t *testing.T) {
	path := populated(t, newFakeClock())
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	names := Buckets()
	err = db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, _ *bolt.Bucket) error {
			if !slices.ContainsFunc(names, func(n []byte) bool { return bytes.Equal(n, name) }) {
				t.Errorf("bucket %s of a ledger is not in Buckets()", name)
			}
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(names[len(names)-1], bMeta) {
		t.Fatalf("Buckets() ends with %s, want meta", names[len(names)-1])
	}
}
