package authz

import (
	"context"
	"errors"
	"testing"
	"time"

	cav1 "github.com/castellan-dev/castellan/api/castellan/ca/v1"
	"github.com/castellan-dev/castellan/ca/store"
	"github.com/castellan-dev/castellan/ca/store/faultstore"
)

// waitChanged waits (at most 5 s) for ch to fire.
func waitChanged(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatalf("Changed did not fire within 5s after %s", what)
	}
}

func ids(ents []*cav1.Entry) []string {
	out := make([]string, len(ents))
	for i, e := range ents {
		out[i] = e.Id
	}
	return out
}

// TestEntriesFollowAnotherReplicasWrites: on a shared store, an entry
// created or deleted through one Entries (replica A) reaches another
// (replica B) that never wrote, and fires B's Changed, so B's SyncAgent
// streams send it.
func TestEntriesFollowAnotherReplicasWrites(t *testing.T) {
	shared := faultstore.Wrap(openDB(t), true)
	a, b := openEntries(t, shared), openEntries(t, shared)
	ctx := context.Background()

	ch := b.Changed()
	ent, err := a.Create(ctx, entry("spiffe://cluster.local/a", "node-1", "unix:uid:1"))
	if err != nil {
		t.Fatal(err)
	}
	waitChanged(t, ch, "a create through another replica")
	if got := b.List("node-1"); len(got) != 1 || got[0].Id != ent.Id {
		t.Fatalf("replica B lists %v, want the entry created through A", ids(got))
	}
	if b.get(ent.Id) == nil {
		t.Fatal("replica B does not authorize with the entry created through A")
	}

	ch = b.Changed()
	if err := a.Delete(ctx, ent.Id); err != nil {
		t.Fatal(err)
	}
	waitChanged(t, ch, "a delete through another replica")
	if got := b.List(""); len(got) != 0 {
		t.Fatalf("replica B still lists %v after A deleted it", ids(got))
	}
}

// TestEntriesWritesCheckTheStoreNotTheIndex: a replica whose index is
// stale (here: it never follows) still refuses a duplicate of an entry
// another replica created, and can delete it: writes decide on the state
// of the store in their own transaction.
func TestEntriesWritesCheckTheStoreNotTheIndex(t *testing.T) {
	db := openDB(t)
	a := openEntries(t, faultstore.Wrap(db, true))
	stale := openEntries(t, db) // not shared: does not follow a's writes
	ctx := context.Background()
	ent, err := a.Create(ctx, entry("spiffe://cluster.local/a", "node-1", "unix:uid:1"))
	if err != nil {
		t.Fatal(err)
	}
	if len(stale.List("")) != 0 {
		t.Fatal("test setup: the stale replica already sees the entry")
	}
	if _, err := stale.Create(ctx, entry("spiffe://cluster.local/a", "node-1", "unix:uid:1")); !isInvalidEntry(err) {
		t.Fatalf("duplicate through a stale replica: %v, want an invalid-entry refusal (duplicate)", err)
	}
	if err := stale.Delete(ctx, ent.Id); err != nil {
		t.Fatalf("delete through a stale replica: %v", err)
	}
	if got := stale.List(""); len(got) != 0 {
		t.Fatalf("after its delete the stale replica lists %v", ids(got))
	}
	if err := a.Delete(ctx, ent.Id); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second delete through A: %v, want ErrNotFound", err)
	}
}

// TestEntriesConcurrentDuplicatesAcrossReplicas: the same entry created at
// once through two replicas is stored once.
func TestEntriesConcurrentDuplicatesAcrossReplicas(t *testing.T) {
	shared := faultstore.Wrap(openDB(t), true)
	reps := []*Entries{openEntries(t, shared), openEntries(t, shared)}
	const n = 8
	errs := make(chan error, n)
	for i := range n {
		go func() {
			_, err := reps[i%2].Create(context.Background(), entry("spiffe://cluster.local/a", "node-1", "unix:uid:1"))
			errs <- err
		}()
	}
	won := 0
	for range n {
		err := <-errs
		switch {
		case err == nil:
			won++
		case !isInvalidEntry(err):
			t.Errorf("loser: %v, want a duplicate refusal", err)
		}
	}
	if won != 1 {
		t.Fatalf("%d creations succeeded, want 1", won)
	}
	fresh := openEntries(t, shared)
	if got := fresh.List(""); len(got) != 1 {
		t.Fatalf("the store holds %d entries, want 1", len(got))
	}
}

// TestEntriesFollowerRetriesAfterStoreFailure: a change signalled while
// the store cannot be read is not lost: the follower retries until the
// reload succeeds, with no further change to wake it.
func TestEntriesFollowerRetriesAfterStoreFailure(t *testing.T) {
	db := openDB(t)
	writer := openEntries(t, faultstore.Wrap(db, true))
	flaky := faultstore.Wrap(db, true)
	follower := openEntries(t, flaky)
	ctx := context.Background()

	flaky.Fail(true)
	ch := follower.Changed()
	if _, err := writer.Create(ctx, entry("spiffe://cluster.local/a", "node-1", "unix:uid:1")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-flaky.Failed():
	case <-time.After(5 * time.Second):
		t.Fatal("the follower did not try to reload after the change")
	}
	flaky.Fail(false)
	waitChanged(t, ch, "the store came back")
	if got := follower.List("node-1"); len(got) != 1 {
		t.Fatalf("follower lists %v after the store came back", ids(got))
	}
}

// TestEntriesWritesOnUnavailableStore: when the store's reads fail, a
// write is reported as the store's failure, never as a decision taken on
// what the failed reads returned (no entry, hence "not found" or "no
// duplicate"), and nothing changes.
func TestEntriesWritesOnUnavailableStore(t *testing.T) {
	flaky := faultstore.Wrap(openDB(t), false)
	e := openEntries(t, flaky)
	ctx := context.Background()
	ent, err := e.Create(ctx, entry("spiffe://cluster.local/a", "node-1", "unix:uid:1"))
	if err != nil {
		t.Fatal(err)
	}
	flaky.Fail(true)
	if _, err := e.Create(ctx, entry("spiffe://cluster.local/b", "node-1", "unix:uid:1")); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("create on a failing store: %v, want ErrUnavailable", err)
	}
	if _, err := e.Create(ctx, entry("spiffe://cluster.local/a", "node-1", "unix:uid:1")); !errors.Is(err, store.ErrUnavailable) || isInvalidEntry(err) {
		t.Errorf("duplicate on a failing store: %v, want ErrUnavailable only", err)
	}
	if err := e.Delete(ctx, ent.Id); !errors.Is(err, store.ErrUnavailable) || errors.Is(err, ErrNotFound) {
		t.Errorf("delete on a failing store: %v, want ErrUnavailable only", err)
	}
	if got := e.List(""); len(got) != 1 || got[0].Id != ent.Id {
		t.Errorf("index after failed writes: %v, want the one entry", ids(got))
	}
	flaky.Fail(false)
	if got := openEntries(t, flaky).List(""); len(got) != 1 || got[0].Id != ent.Id {
		t.Errorf("store after failed writes: %v, want the one entry", ids(got))
	}
}
