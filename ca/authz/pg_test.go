package authz

import (
	"context"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/ca/authn"
	"github.com/castellan-dev/castellan/ca/store"
	"github.com/castellan-dev/castellan/ca/store/pgstore"
	"github.com/castellan-dev/castellan/internal/pgtest"
)

// pgReplica opens the registry keyspace of dsn through its own
// connection, as one CA replica does. The resync poll is set to an hour:
// only the notifications can deliver other replicas' changes in time.
func pgReplica(t *testing.T, dsn string) *pgstore.DB {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgstore.Connect(ctx, dsn, pgstore.Options{ResyncInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Close)
	db, err := conn.Keyspace(ctx, "registry")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// TestEntriesFollowAcrossPostgresReplicas: two replicas on one PostgreSQL
// database; an entry created through A appears in B's Entries and fires
// B's Changed within a second (the contract's bound for other replicas'
// commits), and so does its deletion; a duplicate made through B of A's
// entry is refused.
func TestEntriesFollowAcrossPostgresReplicas(t *testing.T) {
	dsn := pgtest.Start(t).NewDatabase(t)
	a, b := openEntries(t, pgReplica(t, dsn)), openEntries(t, pgReplica(t, dsn))
	ctx := context.Background()

	ch := b.Changed()
	start := time.Now()
	ent, err := a.Create(ctx, entry("spiffe://cluster.local/a", "node-1", "unix:uid:1"))
	if err != nil {
		t.Fatal(err)
	}
	waitChanged(t, ch, "a create through replica A")
	t.Logf("entry created through A reached B in %s", time.Since(start))
	if d := time.Since(start); d > time.Second {
		t.Errorf("replica B saw the entry after %s, want within 1s", d)
	}
	if got := b.List("node-1"); len(got) != 1 || got[0].Id != ent.Id {
		t.Fatalf("replica B lists %v, want the entry created through A", ids(got))
	}
	if _, err := b.Create(ctx, entry("spiffe://cluster.local/a", "node-1", "unix:uid:1")); !isInvalidEntry(err) {
		t.Fatalf("duplicate through B: %v, want a duplicate refusal", err)
	}

	ch = b.Changed()
	start = time.Now()
	if err := a.Delete(ctx, ent.Id); err != nil {
		t.Fatal(err)
	}
	waitChanged(t, ch, "a delete through replica A")
	if d := time.Since(start); d > time.Second {
		t.Errorf("replica B saw the deletion after %s, want within 1s", d)
	}
	if got := b.List(""); len(got) != 0 {
		t.Fatalf("replica B still lists %v", ids(got))
	}
}

// TestRegistryCopiedFromBoltToPostgres: a bbolt registry (entries and join
// tokens) copied bucket by bucket into PostgreSQL with store.Copy, as
// `castellanctl datastore migrate` does, serves the same entries, and its
// unused join token is accepted once there.
func TestRegistryCopiedFromBoltToPostgres(t *testing.T) {
	ctx := context.Background()
	bolt := openDB(t)
	src := openEntries(t, bolt)
	ent, err := src.Create(ctx, entry("spiffe://cluster.local/a", "node-1", "unix:uid:1"))
	if err != nil {
		t.Fatal(err)
	}
	srcTokens, err := authn.NewJoinTokens(ctx, bolt, authn.JoinTokensConfig{})
	if err != nil {
		t.Fatal(err)
	}
	tok, _, err := srcTokens.Create(ctx, "node-1", 0)
	if err != nil {
		t.Fatal(err)
	}
	dst := pgReplica(t, pgtest.Start(t).NewDatabase(t))
	buckets, err := bolt.Buckets()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Copy(ctx, dst, bolt, buckets); err != nil {
		t.Fatal(err)
	}
	if got := openEntries(t, dst).List(""); len(got) != 1 || got[0].Id != ent.Id {
		t.Fatalf("entries after the copy: %v, want %s", ids(got), ent.Id)
	}
	tokens, err := authn.NewJoinTokens(ctx, dst, authn.JoinTokensConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if use, err := tokens.Consume(ctx, tok); err != nil || use.Node != "node-1" {
		t.Fatalf("the copied token: %+v, %v", use, err)
	}
	if _, err := tokens.Consume(ctx, tok); err == nil {
		t.Fatal("the copied token was accepted twice")
	}
}
