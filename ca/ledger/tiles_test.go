package ledger

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/ca/ledger/tree"
	"github.com/castellan-dev/castellan/internal/clock/clocktest"
	"github.com/transparency-dev/merkle/rfc6962"
	bolt "go.etcd.io/bbolt"
)

// NodeHashes serves only complete nodes, and the level-8 node is the root
// of its 256 leaves, which Entry reports independently.
func TestNodeHashesServeOnlyCompleteNodes(t *testing.T) {
	forBackends(t, func(t *testing.T, be backend) {
		clock := newFakeClock()
		l := be.openTest(t, clock)
		fill(t, l, 600, clock.Now().Add(time.Hour))
		leaves, err := l.NodeHashes(0, 256, 256)
		if err != nil {
			t.Fatal(err)
		}
		for i, h := range leaves {
			e, err := l.Entry(context.Background(), 256+uint64(i))
			if err != nil || !bytes.Equal(h, e.LeafHash) || !bytes.Equal(h, rfc6962.DefaultHasher.HashLeaf(e.Data)) {
				t.Fatalf("leaf %d: stored hash is not the hash of the entry (%v)", 256+i, err)
			}
		}
		two, err := l.NodeHashes(8, 0, 2)
		if err != nil || len(two) != 2 {
			t.Fatalf("NodeHashes(8, 0, 2): %d, %v", len(two), err)
		}
		for _, tc := range []struct {
			level    uint8
			from, n  uint64
			want     error
			wantText string
		}{
			{0, 599, 2, entry.ErrNotFound, "not all complete in a log of size 600"},
			{8, 0, 3, entry.ErrNotFound, "not all complete"},
			{10, 0, 1, entry.ErrNotFound, "not all complete"},
			{0, ^uint64(0), 2, entry.ErrNotFound, "not all complete"}, // from+n overflows
			{0, 0, 0, entry.ErrInvalidArgument, "0 nodes"},
			{0, 0, 257, entry.ErrInvalidArgument, "257 nodes"},
			{64, 0, 1, entry.ErrInvalidArgument, "level 64"},
		} {
			if _, err := l.NodeHashes(tc.level, tc.from, tc.n); !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.wantText) {
				t.Errorf("NodeHashes(%d, %d, %d): %v; want %v saying %q", tc.level, tc.from, tc.n, err, tc.want, tc.wantText)
			}
		}
	})
}

// EntryData refuses ranges beyond the log, names a pruned entry, and
// reports an entry whose bytes were altered in the file instead of
// serving it.
func TestEntryDataRefusesPrunedAndDamagedEntries(t *testing.T) {
	clock := newFakeClock()
	l, path := openTest(t, clock)
	fill(t, l, 5, clock.Now().Add(time.Minute))
	fillFrom(t, l, 5, 5, clock.Now().Add(365*24*time.Hour))
	if _, err := l.EntryData(0, 11); !errors.Is(err, entry.ErrNotFound) {
		t.Fatalf("EntryData beyond the log: %v", err)
	}
	clock.Advance(DefaultRetention + time.Hour)
	if n, err := l.Prune(context.Background()); err != nil || n != 5 {
		t.Fatalf("Prune: %d, %v", n, err)
	}
	if _, err := l.EntryData(3, 4); !errors.Is(err, tree.ErrPruned) || !strings.Contains(err.Error(), "entry 3") {
		t.Fatalf("EntryData over pruned entries: %v; want tree.ErrPruned naming entry 3", err)
	}
	data, err := l.EntryData(5, 5)
	if err != nil || len(data) != 5 {
		t.Fatalf("EntryData(5, 5): %d, %v", len(data), err)
	}
	l.Close()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(tree.Entries).Put(tree.Key(7), bytes.Replace(data[2], []byte("ns"), []byte("NS"), 1))
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	// A normal open refuses the altered file; a forensic (read-only) open
	// takes it, and must still refuse to serve the altered entry.
	if _, err := Open(path, Config{Clock: clocktest.Func(clock.Now)}); !errors.Is(err, entry.ErrDamaged) {
		t.Fatalf("Open of an altered ledger: %v; want ErrDamaged", err)
	}
	l2, err := Open(path, Config{Clock: clocktest.Func(clock.Now), ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	if _, err := l2.EntryData(5, 5); err == nil || !strings.Contains(err.Error(), "entry 7 is damaged") {
		t.Fatalf("EntryData over a damaged entry: %v", err)
	}
	if _, err := l2.NodeHashes(0, 5, 5); err != nil {
		t.Fatalf("the hashes of a damaged entry's range: %v", err)
	}
}
