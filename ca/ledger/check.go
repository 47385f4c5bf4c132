package ledger

import (
	"bytes"
	"context"
	"fmt"

	"github.com/castellan-dev/castellan/ca/ledger/checkpoint"
	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/ca/ledger/follow"
	"github.com/castellan-dev/castellan/ca/ledger/logfile"
	"github.com/castellan-dev/castellan/ca/ledger/tree"
	"github.com/castellan-dev/castellan/ca/store"
	"github.com/castellan-dev/castellan/ca/verifier"
	"github.com/transparency-dev/formats/log"
)

// view runs fn in a read transaction of the store. In forensic mode the
// file may be damaged, so a panic or memory fault while reading it becomes
// ErrDamaged.
func (l *Ledger) view(ctx context.Context, fn func(store.Tx) error) error {
	if !l.readOnly {
		return l.db.View(ctx, fn)
	}
	return logfile.Guard(func() error { return l.db.View(ctx, fn) })
}

// checkExisting checks the tree of a ledger file that already holds one
// (a new file has no buckets yet).
func (l *Ledger) checkExisting(path string) error {
	exists := false
	err := l.view(l.ctx, func(tx store.Tx) error {
		if exists = tx.Bucket(tree.Meta) != nil; exists {
			return l.load(tx)
		}
		return nil
	})
	if err != nil || !exists {
		return err
	}
	return l.checkTree(path)
}

// checkTree recomputes the Merkle tree from the stored entries and
// compares it with the stored tree head and the stored signed checkpoint
// (Open, before the ledger is used).
func (l *Ledger) checkTree(path string) error {
	head := follow.Head(l.Published)
	headRoot, err := head.Root()
	if err != nil {
		return logfile.Damaged(path, err)
	}
	cps := []*log.Checkpoint{{Origin: l.origin, Size: head.Size, Hash: headRoot}}
	if last := checkpoint.Last(l.Checkpoints); last != nil {
		cp, err := verifier.OpenCheckpoint(last, l.origin, l.vkey)
		if err != nil {
			return logfile.Damaged(path, fmt.Errorf("stored checkpoint: %w", err))
		}
		if cp.Size != head.Size || !bytes.Equal(cp.Hash, headRoot) {
			cps = append(cps, cp)
		}
	}
	var rep verifier.Report
	if err := l.view(l.ctx, func(tx store.Tx) error { rep = tree.Verify(tx, cps); return nil }); err != nil {
		return logfile.Damaged(path, err)
	}
	if !rep.OK() {
		return logfile.Damaged(path, fmt.Errorf("the Merkle tree does not verify (%d problem(s)); first: %s", rep.ProblemCount, rep.Findings[0]))
	}
	return nil
}

// checkCheckpoint checks the stored checkpoint of a ledger opened with
// New: signed with the log's key, for the log's origin, and not beyond
// the stored tree; at the tree's size, with its root.
func (l *Ledger) checkCheckpoint() error {
	last := checkpoint.Last(l.Checkpoints)
	if last == nil {
		return nil
	}
	cp, err := verifier.OpenCheckpoint(last, l.origin, l.vkey)
	if err != nil {
		return fmt.Errorf("%w: the stored checkpoint does not verify with the log key: %w", entry.ErrDamaged, err)
	}
	head := follow.Head(l.Published)
	root, err := head.Root()
	if err != nil {
		return fmt.Errorf("%w: %w", entry.ErrDamaged, err)
	}
	if cp.Size > head.Size || cp.Size == head.Size && !bytes.Equal(cp.Hash, root) {
		return fmt.Errorf("%w: the stored checkpoint (size %d) does not match the stored tree (size %d); run castellanctl ledger verify",
			entry.ErrDamaged, cp.Size, head.Size)
	}
	return nil
}
