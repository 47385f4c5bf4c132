package follow

import (
	"context"
	"fmt"

	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/ca/ledger/index"
	"github.com/castellan-dev/castellan/ca/ledger/tree"
	"github.com/castellan-dev/castellan/ca/store"
	"github.com/castellan-dev/castellan/ca/verifier"
)

// chunk is how many entries one read transaction of Watch or Export holds,
// so that long reads never pin the database file for long.
const chunk = 1024

// Watch calls fn, in log order, for every entry from index from on,
// including entries appended while it runs (pruned entries come with
// Pruned set). It returns when ctx is done (with ctx.Err()) or fn returns
// an error (that error). fn runs outside any database transaction.
func (p *Published) Watch(ctx context.Context, from uint64, fn func(entry.Entry) error) error {
	for {
		p.mu.Lock()
		grown, size := p.appendCh, p.head.Size
		p.mu.Unlock()
		closed := p.c.Closed()
		if closed {
			return entry.ErrClosed
		}
		for from < size {
			entries, err := p.readRange(ctx, from, min(size, from+chunk))
			if err != nil {
				return err
			}
			for _, e := range entries {
				if err := fn(e); err != nil {
					return err
				}
			}
			from += uint64(len(entries))
		}
		select {
		case <-grown:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// readRange reads entries [from, to).
func (p *Published) readRange(ctx context.Context, from, to uint64) ([]entry.Entry, error) {
	out := make([]entry.Entry, 0, to-from)
	err := p.c.Read(ctx, func(tx store.Tx) error {
		entries, nodes := tree.NewSeqReader(tree.Bucket(tx, tree.Entries), from), tree.NewSeqReader(tree.Bucket(tx, tree.Nodes), from)
		for i := from; i < to; i++ {
			e, err := index.EntryAt(tx, i, entries.Get(i), nodes.Get(i))
			if err != nil {
				return err
			}
			out = append(out, e)
		}
		return nil
	})
	return out, err
}

// Export calls fn for every stored leaf [from, size) in order, where size
// is the stored log size when Export starts (on a shared store, with every
// replica's appends). It reads raw bytes without decoding,
// so a damaged entry is passed on for the auditor to detect. A missing
// entry is passed with nil Data and nil Hash.
func (p *Published) Export(ctx context.Context, from uint64, fn func(verifier.Leaf) error) error {
	size, err := p.storedSize(ctx)
	if err != nil {
		return fmt.Errorf("ledger: export: %w", err)
	}
	for from < size {
		if err := ctx.Err(); err != nil {
			return err
		}
		to := min(size, from+chunk)
		leaves := make([]verifier.Leaf, 0, to-from)
		err := p.c.View(ctx, func(tx store.Tx) error {
			leaves = tree.AppendLeaves(tx, leaves, from, to)
			return nil
		})
		if err != nil {
			return fmt.Errorf("ledger: export: %w", err)
		}
		for _, lf := range leaves {
			if err := fn(lf); err != nil {
				return err
			}
		}
		from = to
	}
	return nil
}

// storedSize returns the log size as stored: the published head on a
// store of its own, read from the store when it is shared.
func (p *Published) storedSize(ctx context.Context) (uint64, error) {
	if !p.c.Shared {
		return p.Size(), nil
	}
	var st tree.Head
	err := p.c.View(ctx, func(tx store.Tx) error {
		var err error
		st, err = tree.Read(tx)
		return err
	})
	return st.Size, err
}
