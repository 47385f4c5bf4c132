package pgstore

import (
	"encoding/binary"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/castellan-dev/castellan/ca/store"
	"github.com/castellan-dev/castellan/ca/store/pgstore/pgschema"
)

// Two replicas incrementing one counter: every read-modify-write is
// serialized by the coordinator row, so none is lost.
func TestReplicasIncrementOneCounterWithoutLoss(t *testing.T) {
	dsn := shared.NewDatabase(t)
	a := keyspaceDB(t, connect(t, dsn, Options{}), "ledger")
	b := keyspaceDB(t, connect(t, dsn, Options{}), "ledger")
	const n = 300
	increment := func(db *DB) error {
		return db.Update(ctxT(t, 30*time.Second), func(tx store.Tx) error {
			bk, err := tx.CreateBucketIfNotExists([]byte("c"))
			if err != nil {
				return err
			}
			var v uint64
			if cur := bk.Get([]byte("n")); cur != nil {
				v = binary.BigEndian.Uint64(cur)
			}
			return bk.Put([]byte("n"), binary.BigEndian.AppendUint64(nil, v+1))
		})
	}
	var wg sync.WaitGroup
	errs := make(chan error, 2*n)
	for _, db := range []*DB{a, b} {
		wg.Go(func() {
			for range n {
				if err := increment(db); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	v, _ := get(t, b, "c", "n")
	if got := binary.BigEndian.Uint64([]byte(v)); got != 2*n {
		t.Fatalf("counter = %d after 2 x %d increments from two replicas", got, n)
	}
}

// A commit through one replica fires the other's Changed within a
// second (NOTIFY), and the committer's own Changed when Update returns.
func TestCommitReachesOtherReplicaWithinASecond(t *testing.T) {
	dsn := shared.NewDatabase(t)
	a := keyspaceDB(t, connect(t, dsn, Options{}), "registry")
	// A resync poll of an hour: only the notification can deliver.
	b := keyspaceDB(t, connect(t, dsn, Options{ResyncInterval: time.Hour}), "registry")
	for i := range 3 {
		ownCh, otherCh := a.Changed(), b.Changed()
		put(t, a, "entries", "e", string(rune('0'+i)))
		if !isClosed(ownCh) {
			t.Fatal("own commit did not fire Changed before Update returned")
		}
		waitClosed(t, otherCh, time.Second, "other replica")
		if v, _ := get(t, b, "entries", "e"); v != string(rune('0'+i)) {
			t.Fatalf("other replica reads %q after Changed", v)
		}
	}
}

// A commit whose notification was lost (a version bumped without
// NOTIFY) is found by the resync poll.
func TestResyncPollFindsCommitWithoutNotification(t *testing.T) {
	dsn := shared.NewDatabase(t)
	b := keyspaceDB(t, connect(t, dsn, Options{ResyncInterval: 100 * time.Millisecond}), "registry")
	ch := b.Changed()
	c, err := pgx.Connect(ctxT(t, 10*time.Second), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctxT(t, 5*time.Second))
	if _, err := c.Exec(ctxT(t, 10*time.Second), `UPDATE castellan_keyspaces SET version = version + 1 WHERE name = 'registry'`); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, ch, 3*time.Second, "resync poll")
}

// The listener's backend terminated: it reconnects (counted, logged) and
// the next commit still arrives within a second.
func TestListenerReconnectsAfterItsBackendIsTerminated(t *testing.T) {
	dsn := shared.NewDatabase(t)
	a := keyspaceDB(t, connect(t, dsn, Options{}), "registry")
	var logs logBuffer
	bc := connect(t, dsn, Options{ResyncInterval: time.Hour, Logger: logs.logger()})
	b := keyspaceDB(t, bc, "registry")
	db := dsnDatabase(t, dsn)
	err := shared.Exec(ctxT(t, 10*time.Second), `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE application_name = $1 AND datname = $2`, listenerName, db)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for counterValue(bc.m.reconnects) < 1 {
		if time.Now().After(deadline) {
			t.Fatalf("listener did not reconnect within 10 s; logs:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	ch := b.Changed()
	put(t, a, "entries", "e", "after reconnect")
	waitClosed(t, ch, time.Second, "after listener reconnect")
	if !containsAll(logs.String(), "lost the LISTEN connection", "LISTEN connection restored") {
		t.Errorf("reconnection not logged:\n%s", logs.String())
	}
}

// Keyspaces on one database are independent: their data, their Changed,
// and their writers (an Update holding one keyspace does not block the
// other).
func TestKeyspacesAreIndependent(t *testing.T) {
	dsn := shared.NewDatabase(t)
	c := connect(t, dsn, Options{})
	ledger, registry := keyspaceDB(t, c, "ledger"), keyspaceDB(t, c, "registry")
	put(t, ledger, "b", "k", "ledger")
	put(t, registry, "b", "k", "registry")
	if v, _ := get(t, ledger, "b", "k"); v != "ledger" {
		t.Fatalf("ledger reads %q", v)
	}
	regCh := registry.Changed()
	put(t, ledger, "b", "k2", "x")
	if isClosed(regCh) {
		t.Error("a ledger commit fired the registry's Changed")
	}
	if _, ok := get(t, registry, "b", "k2"); ok {
		t.Error("a ledger key is visible in the registry")
	}

	holding, release := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- ledger.Update(ctxT(t, 30*time.Second), func(tx store.Tx) error {
			close(holding)
			<-release
			return nil
		})
	}()
	<-holding
	put(t, registry, "b", "k3", "while the ledger is locked") // must not wait
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// A View reads one snapshot: a commit made after it began, even creating
// a bucket, is invisible to it.
func TestViewDoesNotSeeLaterCommits(t *testing.T) {
	dsn := shared.NewDatabase(t)
	a := keyspaceDB(t, connect(t, dsn, Options{}), "ledger")
	other := keyspaceDB(t, connect(t, dsn, Options{}), "ledger")
	put(t, a, "b", "k", "before")
	err := a.View(ctxT(t, 30*time.Second), func(tx store.Tx) error {
		put(t, other, "b", "k", "after")
		put(t, other, "new", "k", "after")
		put(t, a, "new2", "k", "after") // through this very Conn (bucket cache)
		if v := string(tx.Bucket([]byte("b")).Get([]byte("k"))); v != "before" {
			t.Errorf("View saw a later commit: %q", v)
		}
		if tx.Bucket([]byte("new")) != nil || tx.Bucket([]byte("new2")) != nil {
			t.Error("View saw a bucket created after it began")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := get(t, a, "b", "k"); v != "after" {
		t.Fatalf("a View begun after the commit reads %q", v)
	}
}

// Five replicas starting together on an empty database migrate it once.
func TestConcurrentConnectsMigrateOnce(t *testing.T) {
	dsn := shared.NewDatabase(t)
	var wg sync.WaitGroup
	errs := make([]error, 5)
	for i := range errs {
		wg.Go(func() {
			c, err := Connect(ctxT(t, 30*time.Second), dsn, Options{})
			if err == nil {
				_, err = c.Keyspace(ctxT(t, 10*time.Second), "ledger")
				c.Close()
			}
			errs[i] = err
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	c, err := pgx.Connect(ctxT(t, 10*time.Second), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctxT(t, 5*time.Second))
	var n, maxV int
	if err := c.QueryRow(ctxT(t, 5*time.Second), `SELECT count(*), max(version) FROM castellan_schema_migrations`).Scan(&n, &maxV); err != nil {
		t.Fatal(err)
	}
	if n != pgschema.Version() || maxV != pgschema.Version() {
		t.Fatalf("%d migrations recorded up to %d, want %d up to %d", n, maxV, pgschema.Version(), pgschema.Version())
	}
}

// A database migrated by a newer binary is refused.
func TestSchemaNewerThanBinaryIsRefused(t *testing.T) {
	dsn := shared.NewDatabase(t)
	connect(t, dsn, Options{})
	c, err := pgx.Connect(ctxT(t, 10*time.Second), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctxT(t, 5*time.Second))
	if _, err := c.Exec(ctxT(t, 5*time.Second), `INSERT INTO castellan_schema_migrations VALUES ($1, now())`, pgschema.Version()+1); err != nil {
		t.Fatal(err)
	}
	_, err = Connect(ctxT(t, 10*time.Second), dsn, Options{})
	if !errors.Is(err, pgschema.ErrTooNew) {
		t.Fatalf("Connect on a newer schema: %v, want pgschema.ErrTooNew", err)
	}
}
