package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/castellan-dev/castellan/ca/ledger"
	"github.com/castellan-dev/castellan/ca/store"
	"github.com/castellan-dev/castellan/ca/store/boltstore"
	"github.com/castellan-dev/castellan/ca/store/pgstore"
	"github.com/castellan-dev/castellan/ca/verifier"
	"github.com/castellan-dev/castellan/internal/pgtest"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
)

// TestDatastoreMigrateCopiesABoltCAIntoPostgres migrates a bbolt data
// directory (a ledger with a saved checkpoint, a registry bucket) into a
// real PostgreSQL: the copied ledger opens with the file's key, has the
// same size and checkpoint, and stays consistent with the saved checkpoint
// after it grows; a second migration into the same database is refused.
func TestDatastoreMigrateCopiesABoltCAIntoPostgres(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	l, err := ledger.Open(filepath.Join(dir, "ledger.db"), ledger.Config{})
	if err != nil {
		t.Fatal(err)
	}
	issue(t, l, 0, 120, "node-1")
	saved, err := l.Checkpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	vkey := l.VerifierKey()
	l.Close()
	reg, err := boltstore.Open(filepath.Join(dir, "registry.db"))
	if err != nil {
		t.Fatal(err)
	}
	err = reg.Update(ctx, func(tx store.Tx) error {
		b, err := tx.CreateBucketIfNotExists([]byte("entries"))
		if err != nil {
			return err
		}
		return b.Put([]byte("e1"), []byte("an entry"))
	})
	reg.Close()
	if err != nil {
		t.Fatal(err)
	}

	dsnFile := filepath.Join(dir, "dsn")
	if err := os.WriteFile(dsnFile, []byte(pgtest.Start(t).NewDatabase(t)), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errs := ctl(t, filepath.Join(dir, "none.sock"), "datastore", "migrate", "--data-dir", dir, "--to-file", dsnFile)
	if code != 0 {
		t.Fatalf("datastore migrate = %d\n%s%s", code, out, errs)
	}
	if !strings.Contains(out, "ledger: 120 entries, same tree and checkpoint") || !strings.Contains(out, `keyspace "registry"`) {
		t.Fatalf("datastore migrate printed:\n%s", out)
	}

	dsn, _ := os.ReadFile(dsnFile)
	conn, err := pgstore.Connect(ctx, string(dsn), pgstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	db, err := conn.Keyspace(ctx, "ledger")
	if err != nil {
		t.Fatal(err)
	}
	pl, err := ledger.New(db, ledger.Config{KeyFile: filepath.Join(dir, "ledger.db.key")})
	if err != nil {
		t.Fatal(err)
	}
	defer pl.Close()
	issue(t, pl, 120, 10, "node-2")
	grown, err := pl.Checkpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	old, err1 := verifier.OpenCheckpoint(saved, pl.Origin(), vkey)
	cur, err2 := verifier.OpenCheckpoint(grown, pl.Origin(), vkey)
	if err1 != nil || err2 != nil || cur.Size != 130 {
		t.Fatalf("checkpoints: %v %v size %d", err1, err2, cur.Size)
	}
	cons, err := pl.ConsistencyProof(old.Size, cur.Size)
	if err != nil {
		t.Fatal(err)
	}
	if err := proof.VerifyConsistency(rfc6962.DefaultHasher, old.Size, cur.Size, cons, old.Hash, cur.Hash); err != nil {
		t.Fatalf("the checkpoint saved on bbolt is not consistent with the migrated log: %v", err)
	}

	code, _, errs = ctl(t, filepath.Join(dir, "none.sock"), "datastore", "migrate", "--data-dir", dir, "--to-file", dsnFile)
	if code != 1 || !strings.Contains(errs, "already has bucket") {
		t.Fatalf("a second migration into the same database = %d, %q; want a refusal", code, errs)
	}
}

// TestLedgerKeygen: the key file is created owner-only, its verifier key
// is printed and matches a ledger opened with it, and an existing file is
// never overwritten.
func TestLedgerKeygen(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "ledger.key")
	code, out, errs := ctl(t, filepath.Join(dir, "none.sock"), "ledger", "keygen", "--out", key, "--origin", "ca.example.com/castellan/test")
	if code != 0 {
		t.Fatalf("ledger keygen = %d: %s", code, errs)
	}
	fi, err := os.Stat(key)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, mode %v; want 0600", err, fi.Mode())
	}
	l, err := ledger.Open(filepath.Join(dir, "ledger.db"), ledger.Config{KeyFile: key, Origin: "ca.example.com/castellan/test"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if strings.TrimSpace(out) != l.VerifierKey() {
		t.Errorf("keygen printed %q, the ledger's verifier key is %q", out, l.VerifierKey())
	}
	before, _ := os.ReadFile(key)
	if code, _, errs := ctl(t, filepath.Join(dir, "none.sock"), "ledger", "keygen", "--out", key); code != 1 || !strings.Contains(errs, "exists") {
		t.Errorf("keygen over an existing file = %d, %q; want a refusal", code, errs)
	}
	if after, _ := os.ReadFile(key); string(after) != string(before) {
		t.Error("keygen overwrote an existing key")
	}
	code, out, errs = ctl(t, filepath.Join(dir, "none.sock"), "ledger", "keygen", "--trust-domain", "example.org", "--out", filepath.Join(dir, "td.key"))
	if code != 0 || !strings.HasPrefix(out, "example.org/castellan/ledger+") {
		t.Errorf("keygen --trust-domain example.org = %d %q %s; want a key named as castellan-server names the new log", code, out, errs)
	}
	if code, _, _ := ctl(t, filepath.Join(dir, "none.sock"), "ledger", "keygen"); code != 2 {
		t.Errorf("keygen without --out = %d, want usage error 2", code)
	}
}
