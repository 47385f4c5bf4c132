package ledger

import (
	"bytes"
	"context"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	bolt "go.etcd.io/bbolt"

	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/ca/ledger/tree"
	"github.com/castellan-dev/castellan/ca/store"
	"github.com/castellan-dev/castellan/ca/store/boltstore"
	"github.com/castellan-dev/castellan/ca/verifier"
	"github.com/castellan-dev/castellan/internal/clock/clocktest"
)

// populated returns a closed bbolt ledger at path holding every kind of
// bucket (entries, indexes, a lineage, an agent record and a ban).
func populated(t *testing.T, clock *fakeClock) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ledger.db")
	l, err := Open(path, Config{Clock: clocktest.Func(clock.Now)})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	exp := clock.Now().Add(time.Hour)
	parent := certEvent(1, "spiffe://td/castellan/agent/n1", "n1", exp)
	child := certEvent(2, "spiffe://td/castellan/agent/n1", "n1", exp)
	child.Kind, child.Parent = entry.KindRenewal, parent.Serial
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
	if !bytes.Equal(names[len(names)-1], tree.Meta) {
		t.Fatalf("Buckets() ends with %s, want meta", names[len(names)-1])
	}
}

// TestLedgerCopiedToAnotherStoreKeepsItsProofs: a bbolt ledger copied
// with store.Copy into a shared store (the migration to PostgreSQL) opens
// there with its log key, and everything verifies as before: a
// checkpoint saved before the copy is consistent with one signed after
// appends on the new store, entries and proofs are the same bytes, bans
// and lineages are kept.
func TestLedgerCopiedToAnotherStoreKeepsItsProofs(t *testing.T) {
	forSharedBackends(t, func(t *testing.T, be backend) {
		clock := newFakeClock()
		path := populated(t, clock)
		src, err := boltstore.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer src.Close()
		ctx := context.Background()
		var saved []byte
		var size uint64
		err = src.View(ctx, func(tx store.Tx) error {
			saved = bytes.Clone(tx.Bucket(tree.Meta).Get(tree.KeyCheckpoint))
			st, err := tree.Read(tx)
			size = st.Size
			return err
		})
		if err != nil || saved == nil {
			t.Fatalf("no checkpoint in the source: %v", err)
		}
		dst := be.stores(t, 1)[0]
		if _, err := store.Copy(ctx, dst, src, Buckets()); err != nil {
			t.Fatal(err)
		}
		l, err := New(dst, Config{Clock: clocktest.Func(clock.Now), KeyFile: path + ".key"})
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		if l.Size() != size {
			t.Fatalf("copied ledger has %d entries, want %d", l.Size(), size)
		}
		fillFrom(t, l, 1000, 20, clock.Now().Add(time.Hour))
		cur, err := l.Checkpoint(ctx)
		if err != nil {
			t.Fatal(err)
		}
		c1, err := verifier.OpenCheckpoint(saved, "", l.VerifierKey())
		if err != nil {
			t.Fatalf("the checkpoint saved before the copy does not verify with the copied ledger's key: %v", err)
		}
		c2, err := verifier.OpenCheckpoint(cur, "", l.VerifierKey())
		if err != nil {
			t.Fatal(err)
		}
		p, err := l.ConsistencyProof(c1.Size, c2.Size)
		if err != nil {
			t.Fatal(err)
		}
		if err := proof.VerifyConsistency(rfc6962.DefaultHasher, c1.Size, c2.Size, p, c1.Hash, c2.Hash); err != nil {
			t.Fatalf("old checkpoint inconsistent with the copied log: %v", err)
		}
		if _, ok := l.Banned("n1"); !ok {
			t.Fatal("the ban was lost in the copy")
		}
		desc, _, err := l.Descendants(ctx, certEvent(1, "", "", time.Time{}).Serial, 10)
		if err != nil || len(desc) != 1 {
			t.Fatalf("lineage after the copy: %d descendants (%v), want 1", len(desc), err)
		}
		if _, err := New(dst, Config{KeyFile: filepath.Join(t.TempDir(), "missing.key")}); err == nil {
			t.Fatal("the copied ledger opened without its key")
		}
	})
}
