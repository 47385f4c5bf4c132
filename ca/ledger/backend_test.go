package ledger

import (
	"path/filepath"
	"testing"

	"github.com/castellan-dev/castellan/ca/ledger/logkey"
	"github.com/castellan-dev/castellan/ca/store"
	"github.com/castellan-dev/castellan/ca/store/boltstore"
	"github.com/castellan-dev/castellan/internal/clock/clocktest"
)

// backend opens ledgers on one kind of store, so that the core tests run
// on each: "bbolt" is Open on a file (the single-replica default);
// "shared-bbolt" is New on a bbolt store that says it is shared, which
// runs every code path of a shared store (the follower, heads and
// checkpoints read from the store) against a real bbolt file, and lets
// several Ledgers share it; "postgres" is New on a pgstore keyspace of a
// real PostgreSQL (backend_pg_test.go), each replica with its own Conn.
type backend struct {
	name string
	// stores returns n handles on one fresh store (n > 1: the handles of
	// n replicas), closed at cleanup; nil for "bbolt", which is opened
	// with Open.
	stores func(t testing.TB, n int) []store.DB
}

// replicas opens n ledgers on one fresh store, closed at cleanup.
func (be backend) replicas(t testing.TB, n int, opts Config) []*Ledger {
	t.Helper()
	if be.stores == nil {
		if n != 1 {
			t.Fatal("a bbolt file opened with Open has one replica")
		}
		l, err := Open(filepath.Join(t.TempDir(), "ledger.db"), opts)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		return []*Ledger{l}
	}
	opts = withKeyFile(t, t.TempDir(), opts)
	out := make([]*Ledger, n)
	for i, db := range be.stores(t, n) {
		l, err := New(db, opts)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		out[i] = l
	}
	return out
}

// open opens one ledger on a fresh store of the backend.
func (be backend) open(t testing.TB, opts Config) *Ledger {
	t.Helper()
	return be.replicas(t, 1, opts)[0]
}

// openTest opens one ledger with the clock, as the package's openTest.
func (be backend) openTest(t testing.TB, clock *fakeClock) *Ledger {
	t.Helper()
	return be.open(t, Config{Clock: clocktest.Func(clock.Now)})
}

// backends returns the backends the core tests run on.
func backends() []backend {
	return []backend{
		{name: "bbolt"},
		{name: "shared-bbolt", stores: sharedBoltStores},
		{name: "postgres", stores: pgStores},
	}
}

// sharedBackends returns the backends on which several replicas share a
// store.
func sharedBackends() []backend {
	var out []backend
	for _, be := range backends() {
		if be.stores != nil {
			out = append(out, be)
		}
	}
	return out
}

// forBackends runs fn as a subtest on every backend.
func forBackends(t *testing.T, fn func(t *testing.T, be backend)) {
	for _, be := range backends() {
		t.Run(be.name, func(t *testing.T) { fn(t, be) })
	}
}

// forSharedBackends runs fn as a subtest on every shared backend.
func forSharedBackends(t *testing.T, fn func(t *testing.T, be backend)) {
	for _, be := range sharedBackends() {
		t.Run(be.name, func(t *testing.T) { fn(t, be) })
	}
}

// sharedStore is a store that reports itself shared: ledgers on it run
// the follower and read heads from the store, as on PostgreSQL.
type sharedStore struct{ store.DB }

func (sharedStore) Shared() bool { return true }

// sharedBoltStores returns n handles on one bbolt store that reports
// itself shared.
func sharedBoltStores(t testing.TB, n int) []store.DB {
	t.Helper()
	db, err := boltstore.Open(filepath.Join(t.TempDir(), "ledger.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	out := make([]store.DB, n)
	for i := range out {
		out[i] = sharedStore{db}
	}
	return out
}

// withKeyFile returns opts with a log key file made in dir, unless opts
// has a key already.
func withKeyFile(t testing.TB, dir string, opts Config) Config {
	t.Helper()
	if opts.KeyFile != "" || opts.Signer != nil {
		return opts
	}
	opts.KeyFile = filepath.Join(dir, "log.key")
	if _, err := logkey.GenerateKeyFile(opts.KeyFile, opts.Origin); err != nil {
		t.Fatal(err)
	}
	return opts
}
