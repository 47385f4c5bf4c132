package pgstore

import (
	"sync"
	"testing"

	"github.com/castellan-dev/castellan/ca/store"
	"github.com/castellan-dev/castellan/ca/store/storetest"
)

// The contract's conformance suite, each keyspace on a fresh database of
// the shared server; Reopen is a new Conn (a restarted replica), Replica
// another Conn (a second replica) on the same database.
func TestConformance(t *testing.T) {
	var mu sync.Mutex
	dsns := map[store.DB]string{}
	open := func(t *testing.T, dsn string) store.DB {
		db := keyspaceDB(t, connect(t, dsn, Options{}), "ledger")
		mu.Lock()
		dsns[db] = dsn
		mu.Unlock()
		return db
	}
	dsnOf := func(db store.DB) string {
		mu.Lock()
		defer mu.Unlock()
		return dsns[db]
	}
	storetest.Run(t, storetest.Backend{
		Open: func(t *testing.T) store.DB { return open(t, shared.NewDatabase(t)) },
		Reopen: func(t *testing.T, db store.DB) store.DB {
			pdb := db.(*DB)
			pdb.Close()
			pdb.c.Close()
			return open(t, dsnOf(db))
		},
		Replica: func(t *testing.T, db store.DB) store.DB { return open(t, dsnOf(db)) },
	})
}
