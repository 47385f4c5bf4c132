package boltstore_test

import (
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"github.com/castellan-dev/castellan/ca/store"
	"github.com/castellan-dev/castellan/ca/store/boltstore"
	"github.com/castellan-dev/castellan/ca/store/storetest"
)

func TestConformance(t *testing.T) {
	var mu sync.Mutex
	paths := map[store.DB]string{}
	open := func(t *testing.T, path string) store.DB {
		db, err := boltstore.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		mu.Lock()
		paths[db] = path
		mu.Unlock()
		return db
	}
	storetest.Run(t, storetest.Backend{
		Open: func(t *testing.T) store.DB { return open(t, filepath.Join(t.TempDir(), "store.db")) },
		Reopen: func(t *testing.T, db store.DB) store.DB {
			mu.Lock()
			path := paths[db]
			mu.Unlock()
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
			return open(t, path)
		},
	})
}

func TestNotShared(t *testing.T) {
	db, err := boltstore.Open(filepath.Join(t.TempDir(), "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if db.Shared() {
		t.Error("a bbolt file reports Shared")
	}
}

func TestBuckets(t *testing.T) {
	db, err := boltstore.Open(filepath.Join(t.TempDir(), "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(t.Context(), func(tx store.Tx) error {
		for _, n := range []string{"z", "a", "m"} {
			if _, err := tx.CreateBucketIfNotExists([]byte(n)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	got, err := db.Buckets()
	if err != nil || fmt.Sprintf("%s", got) != "[a m z]" {
		t.Errorf("Buckets = %s, %v; want [a m z]", got, err)
	}
}
