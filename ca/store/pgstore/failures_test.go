package pgstore

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/ca/store"
	"github.com/castellan-dev/castellan/internal/pgtest"
)

// PostgreSQL killed: Update, View and Ping fail promptly with
// ErrUnavailable; after its restart the same DB handle works again and
// holds every acknowledged write.
func TestDatabaseKilledThenRestarted(t *testing.T) {
	srv := pgtest.Start(t)
	db := keyspaceDB(t, connect(t, srv.NewDatabase(t), Options{}), "ledger")
	put(t, db, "b", "acked", "1")
	if err := srv.Kill(); err != nil {
		t.Fatal(err)
	}
	const bound = 10 * time.Second
	for name, op := range map[string]func(context.Context) error{
		"Update": func(ctx context.Context) error {
			return db.Update(ctx, func(tx store.Tx) error {
				b, err := tx.CreateBucketIfNotExists([]byte("b"))
				if err != nil {
					return err
				}
				return b.Put([]byte("lost"), []byte("x"))
			})
		},
		"View": func(ctx context.Context) error { return db.View(ctx, func(store.Tx) error { return nil }) },
		"Ping": db.Ping,
	} {
		start := time.Now()
		err := op(ctxT(t, bound))
		if !errors.Is(err, store.ErrUnavailable) {
			t.Errorf("%s with PostgreSQL down: %v, want ErrUnavailable", name, err)
		}
		if took := time.Since(start); took > bound/2 {
			t.Errorf("%s took %s to fail: not prompt", name, took)
		}
	}
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	put(t, db, "b", "after", "2")
	if v, _ := get(t, db, "b", "acked"); v != "1" {
		t.Errorf("acknowledged write lost across a crash: %q", v)
	}
	if _, ok := get(t, db, "b", "lost"); ok {
		t.Error("an Update that failed was written")
	}
	if err := db.Ping(ctxT(t, 5*time.Second)); err != nil {
		t.Errorf("Ping after restart: %v", err)
	}
}

// The database dies inside an Update: a read fails (Get returns nil, the
// cursor ends) and Update reports ErrUnavailable although fn returned
// nil; none of its writes, before or after the failure, is committed.
func TestFailedReadFailsTheUpdateAndWritesNothing(t *testing.T) {
	srv := pgtest.Start(t)
	db := keyspaceDB(t, connect(t, srv.NewDatabase(t), Options{}), "ledger")
	put(t, db, "b", "k", "v")
	var got []byte
	var cursorKey []byte
	err := db.Update(ctxT(t, 20*time.Second), func(tx store.Tx) error {
		b := tx.Bucket([]byte("b"))
		b.Put([]byte("before"), []byte("x"))
		if err := srv.Kill(); err != nil {
			t.Error(err)
		}
		got = b.Get([]byte("k"))
		cursorKey, _ = b.Cursor().First()
		b.Put([]byte("after"), []byte("x"))
		return nil // a careless fn: the failure must still surface
	})
	if !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("Update after a failed read: %v, want ErrUnavailable", err)
	}
	if got != nil || cursorKey != nil {
		t.Errorf("failed reads returned data: Get %q, cursor %q", got, cursorKey)
	}
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"before", "after"} {
		if _, ok := get(t, db, "b", k); ok {
			t.Errorf("%q committed by a failed Update", k)
		}
	}
}

// The connection is cut after the COMMIT was sent and before its answer:
// Update says the outcome is unknown (ErrCommitUnknown), and indeed the
// write did commit.
func TestConnectionLostDuringCommitIsCommitUnknown(t *testing.T) {
	dsn := shared.NewDatabase(t)
	p := newCutProxy(t, dsn)
	db := keyspaceDB(t, connect(t, p.dsn+"&pool_max_conns=1", Options{}), "ledger")
	put(t, db, "b", "warm", "1") // prepares the statements on the one connection
	put(t, db, "b", "warm", "2")
	err := db.Update(ctxT(t, 10*time.Second), func(tx store.Tx) error {
		p.arm() // the next bytes the client sends are the commit batch
		return tx.Bucket([]byte("b")).Put([]byte("k"), []byte("v"))
	})
	if !errors.Is(err, store.ErrCommitUnknown) || !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("connection lost during COMMIT: %v, want ErrCommitUnknown", err)
	}
	direct := keyspaceDB(t, connect(t, dsn, Options{}), "ledger")
	deadline := time.Now().Add(5 * time.Second)
	for {
		if v, _ := get(t, direct, "b", "k"); v == "v" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the cut commit never landed: the proxy cut before the COMMIT was sent")
		}
		time.Sleep(20 * time.Millisecond)
	}
	put(t, db, "b", "next", "ok") // the pool replaced the dead connection
}

// Wrong password, unreachable port: clear errors that never show the
// password, in errors or logs.
func TestConnectErrorsNameTheProblemWithoutThePassword(t *testing.T) {
	dsn := shared.DSN("postgres")
	wrong := strings.Replace(dsn, shared.Password(), "Wr0ngSecretPassw0rd", 1)
	var logs logBuffer
	_, err := Connect(ctxT(t, 10*time.Second), wrong, Options{Logger: logs.logger()})
	if err == nil || !strings.Contains(err.Error(), "password authentication failed") || errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("wrong password: %v", err)
	}
	l, lerr := net.Listen("tcp", "127.0.0.1:0")
	if lerr != nil {
		t.Fatal(lerr)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	unreachable := strings.Replace(dsn, fmt.Sprintf(":%d/", shared.Port()), fmt.Sprintf(":%d/", port), 1)
	start := time.Now()
	_, err2 := Connect(ctxT(t, 10*time.Second), unreachable, Options{Logger: logs.logger()})
	if err2 == nil || !strings.Contains(err2.Error(), fmt.Sprint(port)) || !errors.Is(err2, store.ErrUnavailable) {
		t.Fatalf("unreachable port: %v", err2)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("refused connection took %s to report", took)
	}
	_, err3 := Connect(ctxT(t, 10*time.Second), "postgres://castellan:Wr0ngSecretPassw0rd@127.0.0.1:notaport/db", Options{})
	if err3 == nil {
		t.Fatal("a malformed DSN was accepted")
	}
	for _, s := range []string{err.Error(), err2.Error(), err3.Error(), logs.String()} {
		if strings.Contains(s, "Wr0ngSecretPassw0rd") || strings.Contains(s, shared.Password()) {
			t.Errorf("a password leaked: %s", s)
		}
	}
}

// Close stops the listener and the poller, and closed DBs refuse work.
func TestCloseLeavesNoGoroutineAndRefusesWork(t *testing.T) {
	dsn := shared.NewDatabase(t)
	before := runtime.NumGoroutine()
	c, err := Connect(ctxT(t, 10*time.Second), dsn, Options{ResyncInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	db, err := c.Keyspace(ctxT(t, 10*time.Second), "ledger")
	if err != nil {
		t.Fatal(err)
	}
	put(t, db, "b", "k", "v")
	other, err := c.Keyspace(ctxT(t, 10*time.Second), "ledger")
	if err != nil {
		t.Fatal(err)
	}
	if err := other.Close(); err != nil {
		t.Fatal(err)
	}
	if err := other.View(ctxT(t, time.Second), func(store.Tx) error { return nil }); !errors.Is(err, store.ErrClosed) {
		t.Errorf("View on a closed DB: %v, want ErrClosed", err)
	}
	put(t, db, "b", "k", "still open") // closing one handle leaves the other
	c.Close()
	if err := db.Update(ctxT(t, time.Second), func(store.Tx) error { return nil }); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Update after Conn.Close: %v, want ErrClosed", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines after Close, %d before:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A replica frozen inside an Update (its fn stalls, as a stopped process
// or a partition would) loses its session after the idle-in-transaction
// timeout: the other replicas' writes proceed, and the frozen Update
// fails without writing.
func TestFrozenReplicaDoesNotHoldTheKeyspace(t *testing.T) {
	dsn := shared.NewDatabase(t)
	frozen := keyspaceDB(t, connect(t, dsn, Options{IdleInTransactionTimeout: 300 * time.Millisecond}), "ledger")
	other := keyspaceDB(t, connect(t, dsn, Options{}), "ledger")
	put(t, other, "b", "k", "v")
	holding, release := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- frozen.Update(ctxT(t, 30*time.Second), func(tx store.Tx) error {
			tx.Bucket([]byte("b")).Put([]byte("frozen"), []byte("x"))
			close(holding)
			<-release
			return nil
		})
	}()
	<-holding
	start := time.Now()
	put(t, other, "b", "k", "while frozen") // waits for the lock, then gets it
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("the other replica waited %s for the lock", took)
	}
	close(release)
	if err := <-done; !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("the frozen Update: %v, want ErrUnavailable", err)
	}
	if _, ok := get(t, other, "b", "frozen"); ok {
		t.Error("the frozen Update was committed")
	}
}

// Updates queued behind a long one wait in the process, not on a pooled
// connection each: Views still get a connection (here, of a pool of 2).
func TestQueuedUpdatesDoNotStarveViews(t *testing.T) {
	dsn := shared.NewDatabase(t)
	c := connect(t, dsn+"&pool_max_conns=2", Options{})
	db := keyspaceDB(t, c, "ledger")
	put(t, db, "b", "k", "v")
	holding, release := make(chan struct{}), make(chan struct{})
	done := make(chan error, 4)
	go func() {
		done <- db.Update(ctxT(t, 30*time.Second), func(store.Tx) error {
			close(holding)
			<-release
			return nil
		})
	}()
	<-holding
	for range 3 {
		go func() { done <- db.Update(ctxT(t, 30*time.Second), func(store.Tx) error { return nil }) }()
	}
	// Give the queued Updates a bounded chance to take the second
	// connection, as they would if they queued on the row lock.
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline) && c.pool.Stat().AcquiredConns() < 2; {
		time.Sleep(10 * time.Millisecond)
	}
	err := db.View(ctxT(t, 5*time.Second), func(tx store.Tx) error {
		if string(tx.Bucket([]byte("b")).Get([]byte("k"))) != "v" {
			t.Error("View read the wrong value")
		}
		return nil
	})
	close(release)
	if err != nil {
		t.Fatalf("View while Updates queue: %v", err)
	}
	for range 4 {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
}
