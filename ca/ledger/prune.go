package ledger

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/ca/ledger/tree"
	"github.com/castellan-dev/castellan/ca/store"
)

// pruneBatch bounds the entries one Prune transaction removes.
const pruneBatch = 1000

// Prune removes the full content of entries whose NotAfter is older than
// the retention period at the ledger clock's time. Their leaf hashes and
// tree nodes stay, so every proof still verifies; the entries read back
// with Pruned set. It returns how many entries it pruned.
func (l *Ledger) Prune(ctx context.Context) (int, error) {
	if l.readOnly {
		return 0, entry.ErrReadOnly
	}
	if err := l.waitIndexed(ctx); err != nil {
		return 0, err
	}
	cutoff := l.clock().Add(-l.retention)
	total := 0
	for {
		if err := ctx.Err(); err != nil {
			return total, err
		}
		var n int
		err := l.db.Update(ctx, func(tx store.Tx) error {
			var err error
			n, err = pruneTx(tx, cutoff)
			return err
		})
		if err != nil {
			return total, fmt.Errorf("ledger: prune: %w", err)
		}
		total += n
		if n < pruneBatch {
			break
		}
	}
	l.forgetRevocations(cutoff)
	if total > 0 {
		l.log.Info("ledger pruned expired entries", "entries", total, "cutoff", cutoff)
	}
	return total, nil
}

// pruneTx prunes up to pruneBatch entries that expired before cutoff.
func pruneTx(tx store.Tx, cutoff time.Time) (int, error) {
	end := binary.BigEndian.AppendUint64(nil, uint64(cutoff.UnixNano()))
	var keys [][]byte
	c := tree.Bucket(tx, bExpiry).Cursor()
	for k, _ := c.First(); k != nil && bytes.Compare(k[:8], end) < 0 && len(keys) < pruneBatch; k, _ = c.Next() {
		keys = append(keys, append([]byte(nil), k...))
	}
	ix := newIndexWriter(tx)
	entries := tree.Bucket(tx, tree.Entries)
	for _, k := range keys {
		idx := tree.IndexOf(k)
		e, err := readEntry(tx, idx)
		if err != nil {
			return 0, err
		}
		if err := ix.remove(idx, &e.Event); err != nil {
			return 0, err
		}
		if err := tree.Bucket(tx, bExpiry).Delete(k); err != nil {
			return 0, err
		}
		if err := entries.Put(tree.Key(idx), tree.PrunedMarker); err != nil {
			return 0, err
		}
	}
	return len(keys), nil
}

// forgetRevocations drops from memory the revocations of certificates
// that expired before cutoff: those Prune removed, and those another
// replica's Prune removed from a shared store.
func (l *Ledger) forgetRevocations(cutoff time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := len(l.revoked)
	for s, r := range l.revoked {
		if !r.NotAfter.IsZero() && r.NotAfter.Before(cutoff) {
			delete(l.revoked, s)
		}
	}
	if len(l.revoked) != n {
		close(l.revCh)
		l.revCh = make(chan struct{})
	}
}

// Maintain prunes expired entries and signs a fresh checkpoint every
// interval until ctx is done. Errors are logged, not fatal.
func (l *Ledger) Maintain(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if _, err := l.Prune(ctx); err != nil && ctx.Err() == nil {
			l.log.Error("ledger prune failed", "error", err)
		}
		if _, err := l.Checkpoint(ctx); err != nil && ctx.Err() == nil {
			l.log.Error("ledger checkpoint failed", "error", err)
		}
	}
}
