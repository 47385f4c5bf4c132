package boltcheck

import (
	"errors"
	"fmt"
	"os"
	"runtime/debug"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// Open checks the file at path (Check), opens it with bbolt and runs
// bbolt's own consistency check (tx.Check, which also compares the
// freelist with the pages in use). Any damage is a *DamageError naming the
// file; a lock held by another process is bbolt's ErrTimeout, unwrapped.
// A file that does not exist is created.
//
// tx.Check is skipped for a file that keeps no freelist (written with
// NoFreelistSync) opened for writing: bbolt's Open has then just rebuilt
// the freelist by walking every page the way tx.Check does, and a freelist
// derived from reachability cannot disagree with it. That saves a full
// read of a large file.
func Open(path string, mode os.FileMode, opts *bolt.Options) (*bolt.DB, error) {
	m, err := check(path)
	if err != nil {
		return nil, err
	}
	walked := m.hwm != 0 && m.freelist == noFreelist && (opts == nil || !opts.ReadOnly)
	var db *bolt.DB
	err = Guard(func() error {
		var err error
		db, err = bolt.Open(path, mode, opts)
		return err
	})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, err
	}
	if err != nil {
		return nil, &DamageError{Path: path, Page: -1, Problem: err.Error()}
	}
	if walked {
		return db, nil
	}
	if err := consistent(db); err != nil {
		_ = db.Close()
		return nil, &DamageError{Path: path, Page: -1, Problem: err.Error()}
	}
	return db, nil
}

// consistent runs tx.Check. It is safe only on a file that passed Check:
// tx.Check reads pages on a goroutine of its own, where bbolt's panic on a
// damaged page would crash the process.
func consistent(db *bolt.DB) error {
	return Guard(func() error {
		return db.View(func(tx *bolt.Tx) error {
			var first error
			for err := range tx.Check() { // drain: tx.Check's goroutine blocks otherwise
				if first == nil {
					first = err
				}
			}
			return first
		})
	})
}

// Guard runs fn and turns a panic, or a memory fault while fn reads a
// memory-mapped file, into an error wrapping ErrDamaged. It covers fn's own
// goroutine only: goroutines fn starts are not protected.
func Guard(fn func() error) (err error) {
	old := debug.SetPanicOnFault(true)
	defer func() {
		debug.SetPanicOnFault(old)
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: bbolt failed reading it: %v", ErrDamaged, r)
		}
	}()
	return fn()
}
