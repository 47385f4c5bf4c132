package ledger

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/ca/ledger/logfile"
	"github.com/castellan-dev/castellan/ca/ledger/tree"
	"github.com/castellan-dev/castellan/ca/verifier"
	"github.com/castellan-dev/castellan/internal/clock/clocktest"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	bolt "go.etcd.io/bbolt"
)

// tamperable builds a closed ledger file of n entries with a stored
// checkpoint and returns its path and verifier key.
func tamperable(t *testing.T, n int) (string, string, []byte) {
	t.Helper()
	clock := newFakeClock()
	path := filepath.Join(t.TempDir(), "ledger.db")
	l, err := Open(path, Config{Clock: clocktest.Func(clock.Now)})
	if err != nil {
		t.Fatal(err)
	}
	fill(t, l, n, clock.Now().Add(time.Hour))
	cp, err := l.Checkpoint(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	vkey := l.VerifierKey()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return path, vkey, cp
}

func editFile(t *testing.T, path string, fn func(tx *bolt.Tx) error) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(fn); err != nil {
		t.Fatal(err)
	}
}

func wantFinding(t *testing.T, rep verifier.Report, substr string) {
	t.Helper()
	for _, f := range rep.Findings {
		if strings.Contains(f, substr) {
			return
		}
	}
	t.Fatalf("no finding containing %q in %q", substr, rep.Findings)
}

func TestVerifyUntouchedLogIsClean(t *testing.T) {
	path, vkey, _ := tamperable(t, 1000)
	rep, err := logfile.VerifyFile(path, vkey)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() || rep.Entries != 1000 {
		t.Fatalf("report = %+v", rep)
	}
}

func TestVerifyCatchesFlippedByte(t *testing.T) {
	path, vkey, _ := tamperable(t, 1000)
	editFile(t, path, func(tx *bolt.Tx) error {
		b := tx.Bucket(tree.Entries)
		v := append([]byte(nil), b.Get(tree.Key(234))...)
		i := strings.Index(string(v), "node-")
		v[i+5] ^= 1 // node-4 -> node-5
		return b.Put(tree.Key(234), v)
	})
	rep, err := logfile.VerifyFile(path, vkey)
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK() {
		t.Fatal("flipped byte not detected")
	}
	wantFinding(t, rep, "entry 234 does not hash to its stored leaf")
	wantFinding(t, rep, "do not hash to the root in checkpoint 1000")
}

func TestVerifyCatchesFlippedByteWithLeafHashRewritten(t *testing.T) {
	path, vkey, _ := tamperable(t, 100)
	editFile(t, path, func(tx *bolt.Tx) error {
		b := tx.Bucket(tree.Entries)
		v := append([]byte(nil), b.Get(tree.Key(7))...)
		v[len(v)-3] ^= 1
		nodes := tx.Bucket(tree.Nodes)
		rec := append([]byte(nil), nodes.Get(tree.Key(7))...)
		copy(rec, rfc6962.DefaultHasher.HashLeaf(v))
		if err := nodes.Put(tree.Key(7), rec); err != nil {
			return err
		}
		return b.Put(tree.Key(7), v)
	})
	rep, _ := logfile.VerifyFile(path, vkey)
	wantFinding(t, rep, "do not hash to the root in checkpoint 100")
}

func TestVerifyCatchesDeletedEntry(t *testing.T) {
	path, vkey, _ := tamperable(t, 1000)
	editFile(t, path, func(tx *bolt.Tx) error { return tx.Bucket(tree.Entries).Delete(tree.Key(500)) })
	rep, err := logfile.VerifyFile(path, vkey)
	if err != nil {
		t.Fatal(err)
	}
	wantFinding(t, rep, "entry 500 is missing")

	// The ledger refuses to open it for issuance, naming the file, and
	// leaves the file as it found it.
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if l, err := Open(path, Config{}); !errors.Is(err, entry.ErrDamaged) || !strings.Contains(err.Error(), path) ||
		!strings.Contains(err.Error(), "entry 500 is missing") {
		if err == nil {
			l.Close()
		}
		t.Fatalf("Open = %v; want ErrDamaged naming %s and the missing entry", err, path)
	}
	if after, err := os.ReadFile(path); err != nil || !bytes.Equal(before, after) {
		t.Fatalf("the refused Open wrote to the damaged file (%v)", err)
	}
	// Opened read-only for forensics, it reports it through Export.
	l, err := Open(path, Config{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	cp, _ := verifier.OpenCheckpoint(l.StoredCheckpoint(), "", vkey)
	v := verifier.NewTree(cp)
	if err := l.Export(context.Background(), 0, func(lf verifier.Leaf) error { v.Add(lf); return nil }); err != nil {
		t.Fatal(err)
	}
	rep = v.Finish()
	wantFinding(t, rep, "entry 500 is missing")
	// and refuses appends.
	if _, err := l.Append(context.Background(), certEvent(5000, "spiffe://td/x", "n", time.Now().Add(time.Hour))); !errors.Is(err, entry.ErrReadOnly) {
		t.Fatalf("Append in forensic mode = %v, want ErrReadOnly", err)
	}
}

func TestVerifyCatchesTruncatedLog(t *testing.T) {
	path, vkey, _ := tamperable(t, 100)
	editFile(t, path, func(tx *bolt.Tx) error {
		for i := uint64(90); i < 100; i++ {
			if err := tx.Bucket(tree.Entries).Delete(tree.Key(i)); err != nil {
				return err
			}
		}
		return nil
	})
	rep, _ := logfile.VerifyFile(path, vkey)
	wantFinding(t, rep, "checkpoint 100 commits to 100 entries but the log has only 90")
}

func TestVerifySinceCatchesRewrittenHistory(t *testing.T) {
	// The operator keeps the log key but rebuilds the log with entry 5
	// changed, then signs a new, self-consistent checkpoint.
	clock := newFakeClock()
	dir := t.TempDir()
	orig := filepath.Join(dir, "orig.db")
	l, err := Open(orig, Config{Clock: clocktest.Func(clock.Now)})
	if err != nil {
		t.Fatal(err)
	}
	exp := clock.Now().Add(time.Hour)
	fill(t, l, 50, exp)
	old, _ := l.Checkpoint(context.Background())
	vkey := l.VerifierKey()
	l.Close()

	forged := filepath.Join(dir, "forged.db")
	copyFile(t, orig+".key", forged+".key")
	f, err := Open(forged, Config{Clock: clocktest.Func(clock.Now)})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 60; i++ {
		ev := certEvent(i, "spiffe://cluster.local/ns/ns0/sa/sa0", "node-0", exp)
		if i == 5 {
			ev.Node = "node-evil"
		}
		if _, err := f.Append(context.Background(), ev); err != nil {
			t.Fatal(err)
		}
	}
	cur, _ := f.Checkpoint(context.Background())
	f.Close()

	rep, err := logfile.VerifyFile(forged, vkey)
	if err != nil || !rep.OK() {
		t.Fatalf("forged log should be self-consistent: %+v %v", rep, err)
	}
	rep, err = logfile.VerifyFile(forged, vkey, old)
	if err != nil {
		t.Fatal(err)
	}
	wantFinding(t, rep, "the first 50 entries do not hash to the root in checkpoint 50")

	// The consistency proof the forged log serves does not verify either.
	f, err = Open(forged, Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p, err := f.ConsistencyProof(50, 60)
	if err != nil {
		t.Fatal(err)
	}
	c1, _ := verifier.OpenCheckpoint(old, "", vkey)
	c2, _ := verifier.OpenCheckpoint(cur, "", vkey)
	if proof.VerifyConsistency(rfc6962.DefaultHasher, 50, 60, p, c1.Hash, c2.Hash) == nil {
		t.Fatal("consistency proof of rewritten history verified")
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
}

func TestOpenTruncatedFileFailsCleanly(t *testing.T) {
	path, _, _ := tamperable(t, 2000)
	// Cut the pages in use in half (the file is longer: bbolt grows it
	// ahead of its data).
	used := int64(0)
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	err = db.View(func(tx *bolt.Tx) error { used = tx.Size(); return nil })
	db.Close()
	if err != nil || used < 100_000 {
		t.Fatalf("the ledger uses %d bytes (%v); want a file of 2,000 entries", used, err)
	}
	if err := os.Truncate(path, used/2); err != nil {
		t.Fatal(err)
	}
	l, err := Open(path, Config{})
	if err == nil {
		l.Close()
		t.Fatal("Open of a truncated file succeeded")
	}
	if !strings.Contains(err.Error(), "ledger:") || !strings.Contains(err.Error(), "is truncated") {
		t.Fatalf("unclear error: %v", err)
	}
}
