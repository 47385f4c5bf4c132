// Package logfile is the ledger's bbolt file: opening it for writing
// after checking every page (a damaged file is ErrDamaged naming it, never
// a bbolt panic), opening a damaged one read-only for forensics from a
// salvaged copy, and verifying a file offline (VerifyFile).
package logfile

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/ca/ledger/index"
	"github.com/castellan-dev/castellan/ca/ledger/tree"
	"github.com/castellan-dev/castellan/ca/store/boltstore"
	"github.com/castellan-dev/castellan/internal/boltcheck"
	bolt "go.etcd.io/bbolt"
)

// boltOptions are the bbolt options of a ledger opened for writing. The
// file is mapped with boltstore.InitialMmapSize of address space: bbolt
// remaps a growing file under a lock that waits for every open read
// transaction, so without it an append that grows the file would wait
// for the longest View (an export, a follower's read) to end.
func boltOptions() *bolt.Options {
	return &bolt.Options{Timeout: 5 * time.Second, NoFreelistSync: true, FreelistType: bolt.FreelistMapType,
		InitialMmapSize: boltstore.InitialMmapSize}
}

// damageError is a failed integrity check; errors.Is(err, entry.ErrDamaged).
type damageError struct{ msg string }

func (e *damageError) Error() string        { return e.msg }
func (e *damageError) Is(target error) bool { return target == entry.ErrDamaged }

// Damaged returns the ErrDamaged error for the file at path, saying what
// is wrong (why) and what to do.
func Damaged(path string, why error) error {
	msg := fmt.Sprintf("%s is damaged: %v", path, why)
	var de *boltcheck.DamageError
	if errors.As(why, &de) {
		msg = de.Error()
	}
	return &damageError{msg: "ledger: " + msg + "; restore the file from a backup (the server must not issue from a damaged ledger)"}
}

// OpenChecked opens the ledger file for writing after checking it: every
// page with boltcheck (bbolt would panic or fault on a damaged one, in
// part on goroutines no caller can recover), then bbolt's tx.Check.
func OpenChecked(path string) (*bolt.DB, error) {
	db, err := boltcheck.Open(path, 0o600, boltOptions())
	if errors.Is(err, boltcheck.ErrDamaged) {
		return nil, Damaged(path, err)
	}
	if err != nil {
		return nil, fmt.Errorf("ledger: open %s: %w", path, err)
	}
	return db, nil
}

// OpenForensic opens a possibly damaged ledger file read-only. An intact
// file is opened as it is. A damaged one is never handed to bbolt, which
// could crash or loop forever on it: boltcheck.Salvage copies every entry
// it can read into a sound file in a temporary directory, and that copy is
// opened; cleanup removes it.
func OpenForensic(path string, log *slog.Logger) (db *bolt.DB, cleanup func(), err error) {
	src, cleanup := path, func() {}
	if err := boltcheck.Check(path); err != nil {
		if !errors.Is(err, boltcheck.ErrDamaged) {
			return nil, nil, fmt.Errorf("ledger: %w", err)
		}
		if src, cleanup, err = salvage(path, log); err != nil {
			return nil, nil, err
		}
	}
	err = boltcheck.Guard(func() error {
		var err error
		db, err = bolt.Open(src, 0o600, &bolt.Options{ReadOnly: true, Timeout: 5 * time.Second})
		return err
	})
	if err != nil {
		cleanup()
		return nil, nil, fmt.Errorf("ledger: open %s read-only: %w", src, err)
	}
	return db, cleanup, nil
}

// salvage copies what can be read of the damaged ledger at path into a
// temporary file with every ledger bucket present, and logs the damage.
func salvage(path string, log *slog.Logger) (string, func(), error) {
	dir, err := os.MkdirTemp("", "castellan-forensic-")
	if err != nil {
		return "", nil, fmt.Errorf("ledger: salvage %s: %w", path, err)
	}
	cleanup := func() { os.RemoveAll(dir) }
	dst := filepath.Join(dir, "salvaged.db")
	problems, n, err := boltcheck.Salvage(path, dst)
	if err == nil {
		err = addBuckets(dst)
	}
	if err != nil {
		cleanup()
		return "", nil, Damaged(path, fmt.Errorf("nothing can be salvaged: %w", err))
	}
	log.Error("the ledger file is damaged; serving what could be read of it, read-only, for forensics",
		"path", path, "salvaged_copy", dst, "damaged_parts", n)
	for _, p := range problems {
		log.Error("ledger damage skipped", "path", path, "page", p.Page, "problem", p.Problem)
	}
	return dst, cleanup, nil
}

// addBuckets creates the ledger's buckets missing from a salvaged copy.
func addBuckets(path string) error {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		return err
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range append([][]byte{tree.Meta, tree.Entries, tree.Nodes}, index.Buckets()...) {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		return nil
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	return err
}

// Guard runs fn, a read of a possibly damaged file (forensic mode): a
// panic or memory fault while reading it becomes an entry.ErrDamaged error.
func Guard(fn func() error) error {
	err := boltcheck.Guard(fn)
	if errors.Is(err, boltcheck.ErrDamaged) && !errors.Is(err, entry.ErrDamaged) {
		return &damageError{msg: "ledger: " + err.Error()}
	}
	return err
}
