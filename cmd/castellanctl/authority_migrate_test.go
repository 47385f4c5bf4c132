package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/castellan-dev/castellan/ca/authority"
	"github.com/castellan-dev/castellan/ca/ledger"
	"github.com/castellan-dev/castellan/ca/store/boltstore"
	"github.com/castellan-dev/castellan/ca/store/pgstore"
	"github.com/castellan-dev/castellan/internal/pgtest"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// TestDatastoreMigrateKeepsTheCAsAuthorities migrates a bbolt CA that
// rotated once into PostgreSQL: the authority journal is copied, and a CA
// opened on the "authority" keyspace with the data directory's KEK signs
// with the same authority and publishes the same roots (a migration never
// makes a new CA, which would break every agent).
func TestDatastoreMigrateKeepsTheCAsAuthorities(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	td := spiffeid.RequireTrustDomainFromString("cluster.local")
	l, err := ledger.Open(filepath.Join(dir, "ledger.db"), ledger.Config{})
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	reg, err := boltstore.Open(filepath.Join(dir, "registry.db"))
	if err != nil {
		t.Fatal(err)
	}
	reg.Close()
	journal, err := boltstore.Open(filepath.Join(dir, "authority.db"))
	if err != nil {
		t.Fatal(err)
	}
	auth, err := authority.Open(ctx, authority.Config{TrustDomain: td, DataDir: dir, Journal: journal})
	if err != nil {
		t.Fatal(err)
	}
	next, err := auth.Prepare(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := auth.Activate(ctx, next.ID, true); err != nil {
		t.Fatal(err)
	}
	before := auth.Snapshot()
	journal.Close()

	dsnFile := filepath.Join(dir, "dsn")
	if err := os.WriteFile(dsnFile, []byte(pgtest.Start(t).NewDatabase(t)), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errs := ctl(t, filepath.Join(dir, "none.sock"), "datastore", "migrate", "--data-dir", dir, "--to-file", dsnFile)
	if code != 0 || !strings.Contains(out, `keyspace "authority"`) || !strings.Contains(out, "--kek-file") {
		t.Fatalf("datastore migrate = %d\n%s%s", code, out, errs)
	}
	dsn, _ := os.ReadFile(dsnFile)
	conn, err := pgstore.Connect(ctx, string(dsn), pgstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ks, err := conn.Keyspace(ctx, "authority")
	if err != nil {
		t.Fatal(err)
	}
	migrated, err := authority.Open(ctx, authority.Config{TrustDomain: td, Journal: ks, KEKFile: filepath.Join(dir, authority.KEKName)})
	if err != nil {
		t.Fatalf("open the migrated journal with the data dir's KEK: %v", err)
	}
	after := migrated.Snapshot()
	if after.ActiveID != before.ActiveID || !after.Chain[0].Equal(before.Chain[0]) || len(after.Roots) != len(before.Roots) {
		t.Fatalf("after migration: active %s with %d roots, want %s with %d", after.ActiveID, len(after.Roots), before.ActiveID, len(before.Roots))
	}
	list, err := migrated.Authorities(ctx)
	if err != nil || len(list) != 2 {
		t.Fatalf("migrated journal lists %d authorities (%v), want 2", len(list), err)
	}
}

// TestDatastoreMigrateWithoutJournal: a data directory last served without
// an authority journal migrates, saying there was none.
func TestDatastoreMigrateWithoutJournal(t *testing.T) {
	dir := t.TempDir()
	l, err := ledger.Open(filepath.Join(dir, "ledger.db"), ledger.Config{})
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	reg, err := boltstore.Open(filepath.Join(dir, "registry.db"))
	if err != nil {
		t.Fatal(err)
	}
	reg.Close()
	dsnFile := filepath.Join(dir, "dsn")
	if err := os.WriteFile(dsnFile, []byte(pgtest.Start(t).NewDatabase(t)), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errs := ctl(t, filepath.Join(dir, "none.sock"), "datastore", "migrate", "--data-dir", dir, "--to-file", dsnFile)
	if code != 0 || !strings.Contains(out, "no authority.db") {
		t.Fatalf("datastore migrate = %d\n%s%s", code, out, errs)
	}
	if _, err := os.Stat(filepath.Join(dir, "authority.db")); !os.IsNotExist(err) {
		t.Fatal("migrate created authority.db in the data directory")
	}
}
