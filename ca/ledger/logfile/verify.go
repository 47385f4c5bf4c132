package logfile

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/transparency-dev/formats/log"
	bolt "go.etcd.io/bbolt"

	"github.com/castellan-dev/castellan/ca/ledger/tree"
	"github.com/castellan-dev/castellan/ca/store"
	"github.com/castellan-dev/castellan/ca/store/boltstore"
	"github.com/castellan-dev/castellan/ca/verifier"
	"github.com/castellan-dev/castellan/internal/boltcheck"
)

// VerifyFile verifies a ledger file offline: it checks the file's page
// structure, checks the stored checkpoint's signature with vkey, recomputes
// the tree from the stored entries and compares it with the stored
// checkpoint and with any extra checkpoints (e.g. one saved earlier). The
// file is opened read-only; the server holding it must be stopped. A
// damaged file is a Report with a finding, not an error (and never a
// panic); errors are for files that cannot be read at all.
func VerifyFile(path, vkey string, extra ...[]byte) (verifier.Report, error) {
	var rep verifier.Report
	if _, err := os.Stat(path); err != nil {
		return rep, fmt.Errorf("ledger: %w", err)
	}
	if err := boltcheck.Check(path); err != nil {
		if !errors.Is(err, boltcheck.ErrDamaged) {
			return rep, fmt.Errorf("ledger: %w", err)
		}
		rep.Addf("%v; restore the file from a backup", err)
		return rep, nil
	}
	var db *bolt.DB
	err := boltcheck.Guard(func() error {
		var err error
		db, err = bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: 2 * time.Second})
		return err
	})
	if err != nil {
		return rep, fmt.Errorf("ledger: open %s: %w", path, err)
	}
	defer db.Close()
	err = boltcheck.Guard(func() error {
		return boltstore.New(db).View(context.Background(), func(tx store.Tx) error {
			meta := tx.Bucket(tree.Meta)
			if meta == nil || tx.Bucket(tree.Entries) == nil || tx.Bucket(tree.Nodes) == nil {
				return fmt.Errorf("ledger: %s is not a ledger file", path)
			}
			var cps []*log.Checkpoint
			for _, signed := range append([][]byte{meta.Get(tree.KeyCheckpoint)}, extra...) {
				if signed == nil {
					continue
				}
				cp, err := verifier.OpenCheckpoint(signed, string(meta.Get(tree.KeyOrigin)), vkey)
				if err != nil {
					return err
				}
				cps = append(cps, cp)
			}
			rep = tree.Verify(tx, cps)
			if stored := meta.Get(tree.KeyCheckpoint); stored == nil {
				rep.Addf("the file holds no signed checkpoint; there is nothing to verify the entries against")
			} else {
				rep.Checkpoint = cps[0].Size
			}
			return nil
		})
	})
	if errors.Is(err, boltcheck.ErrDamaged) {
		rep.Addf("%s is damaged: %v; restore the file from a backup", path, err)
		return rep, nil
	}
	return rep, err
}
