package ledger

import (
	"context"
	"fmt"
	"time"

	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/ca/ledger/index"
	"github.com/castellan-dev/castellan/ca/ledger/revocation"
	"github.com/castellan-dev/castellan/ca/store"
)

// Prune removes the full content of entries whose NotAfter is older than
// the retention period at the ledger clock's time. Their leaf hashes and
// tree nodes stay, so every proof still verifies; the entries read back
// with Pruned set. It returns how many entries it pruned.
func (l *Ledger) Prune(ctx context.Context) (int, error) {
	if l.readOnly {
		return 0, entry.ErrReadOnly
	}
	if err := index.Wait(l.Index, ctx); err != nil {
		return 0, err
	}
	cutoff := l.clock.Now().Add(-l.retention)
	total := 0
	for {
		if err := ctx.Err(); err != nil {
			return total, err
		}
		var n int
		err := l.db.Update(ctx, func(tx store.Tx) error {
			var err error
			n, err = index.PruneTx(tx, cutoff)
			return err
		})
		if err != nil {
			return total, fmt.Errorf("ledger: prune: %w", err)
		}
		total += n
		if n < index.PruneBatch {
			break
		}
	}
	revocation.Forget(l.Set, cutoff)
	if total > 0 {
		l.log.Info("ledger pruned expired entries", "entries", total, "cutoff", cutoff)
	}
	return total, nil
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
