package checkpoint

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/ca/ledger/tree"
	"github.com/castellan-dev/castellan/ca/store"
	"golang.org/x/mod/sumdb/note"
)

// WitnessedCheckpoint returns the latest witnessed checkpoint stored in
// the ledger's store (nil if none), which on a shared store may have been
// stored by another replica: every replica serves the same one. Nil once
// closed or if the store cannot be read (a read failure is logged).
func (c *Checkpoints) WitnessedCheckpoint() []byte {
	var cp []byte
	err := c.c.View(c.c.Ctx, func(tx store.Tx) error {
		cp = bytes.Clone(tree.Bucket(tx, tree.Meta).Get(tree.KeyWitnessed))
		return nil
	})
	if err != nil {
		if !errors.Is(err, context.Canceled) {
			c.c.Log.Warn("ledger: could not read the witnessed checkpoint", "error", err.Error())
		}
		return nil
	}
	return cp
}

// StoreWitnessedCheckpoint stores cp, a checkpoint of this log carrying
// witness cosignatures, unless the stored one is of a larger tree (or of
// the same size and another tree, which the caller's witnesses would have
// refused: the stored one is kept). The caller verifies the cosignatures
// against its witness policy; StoreWitnessedCheckpoint checks only that cp
// is a checkpoint of this log signed by the log's key, and that its tree
// is not larger than the log.
func (c *Checkpoints) StoreWitnessedCheckpoint(ctx context.Context, cp []byte) error {
	n, err := note.Open(cp, note.VerifierList(c.c.Verifier))
	if err != nil {
		return fmt.Errorf("ledger: witnessed checkpoint: not signed by the log key %s: %w", c.c.Verifier.Name(), err)
	}
	text := []byte(n.Text)
	size := Size(text)
	if !bytes.HasPrefix(text, []byte(c.c.Origin+"\n")) || size == 0 {
		return fmt.Errorf("ledger: witnessed checkpoint: not a checkpoint of log %q", c.c.Origin)
	}
	if c.c.ReadOnly {
		return entry.ErrReadOnly
	}
	err = c.c.Update(ctx, func(tx store.Tx) error {
		meta := tree.Bucket(tx, tree.Meta)
		if head, err := tree.Read(tx); err != nil {
			return err
		} else if size > head.Size {
			return fmt.Errorf("ledger: witnessed checkpoint of size %d is larger than the log (%d entries)", size, head.Size)
		}
		if old := meta.Get(tree.KeyWitnessed); old != nil {
			oldSize := Size(old)
			if oldSize > size || oldSize == size && !bytes.HasPrefix(old, text) {
				return nil
			}
		}
		return meta.Put(tree.KeyWitnessed, cp)
	})
	if err != nil {
		return fmt.Errorf("ledger: store the witnessed checkpoint: %w", err)
	}
	return nil
}
