package pgstore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/ca/store"
	"github.com/castellan-dev/castellan/internal/pgtest"
)

// outcome of one write: acknowledged, refused (not written), unknown.
type outcome int

const (
	acked outcome = iota
	refused
	unknown
)

// writer puts unique keys through db until stop, recording each outcome.
func writer(db *DB, name string, stop <-chan struct{}, afterRestart *atomic.Int64, record func(string, outcome)) {
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		default:
		}
		key := fmt.Sprintf("%s-%06d", name, i)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := db.Update(ctx, func(tx store.Tx) error {
			b, err := tx.CreateBucketIfNotExists([]byte("log"))
			if err != nil {
				return err
			}
			return b.Put([]byte(key), []byte(key))
		})
		cancel()
		switch {
		case err == nil:
			record(key, acked)
			afterRestart.Add(1)
		case errors.Is(err, store.ErrCommitUnknown):
			record(key, unknown)
		case errors.Is(err, store.ErrUnavailable):
			record(key, refused)
			time.Sleep(20 * time.Millisecond) // back off while the database is away
		default:
			record(key, refused)
		}
	}
}

// PostgreSQL restarted (fast shutdown), then crashed (SIGKILL) and
// restarted, under continuous writes from two replicas: every
// acknowledged write survives, no refused write appears, and both
// replicas write again afterwards through the same handles.
func TestRestartUnderLoadLosesNothingAcknowledged(t *testing.T) {
	srv := pgtest.Start(t)
	dsn := srv.NewDatabase(t)
	dbs := []*DB{keyspaceDB(t, connect(t, dsn, Options{}), "ledger"), keyspaceDB(t, connect(t, dsn, Options{}), "ledger")}
	var mu sync.Mutex
	outcomes := map[string]outcome{}
	record := func(k string, o outcome) { mu.Lock(); outcomes[k] = o; mu.Unlock() }
	stop := make(chan struct{})
	var progress atomic.Int64
	var wg sync.WaitGroup
	for i, db := range dbs {
		wg.Go(func() { writer(db, fmt.Sprintf("r%d", i), stop, &progress, record) })
	}
	waitProgress := func(what string) {
		t.Helper()
		progress.Store(0)
		deadline := time.Now().Add(20 * time.Second)
		for progress.Load() < 20 {
			if time.Now().After(deadline) {
				close(stop)
				wg.Wait()
				t.Fatalf("%s: writes did not resume within 20 s", what)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitProgress("start")
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	waitProgress("after a restart")
	if err := srv.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	waitProgress("after a crash")
	close(stop)
	wg.Wait()

	present := map[string]bool{}
	err := dbs[0].View(ctxT(t, 30*time.Second), func(tx store.Tx) error {
		return tx.Bucket([]byte("log")).ForEach(func(k, _ []byte) error { present[string(k)] = true; return nil })
	})
	if err != nil {
		t.Fatal(err)
	}
	var counts [3]int
	for k, o := range outcomes {
		counts[o]++
		if o == acked && !present[k] {
			t.Errorf("acknowledged write %s lost", k)
		}
		if o == refused && present[k] {
			t.Errorf("refused write %s was committed", k)
		}
	}
	t.Logf("%d acknowledged, %d refused, %d unknown", counts[acked], counts[refused], counts[unknown])
}
