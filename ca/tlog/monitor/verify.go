package monitor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/castellan-dev/castellan/ca/tlog/logentry"
	"github.com/transparency-dev/formats/log"
	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/rfc6962"
	"github.com/transparency-dev/tessera/api/layout"
)

// pass verifies the entries [old.Size, cp.Size) of one step. The old
// tree's nodes, read from the tiles, must hash to the old root; extended
// with the leaf hashes of the new entries, chunk by chunk, and completed
// with the tiles' nodes for the rest of the tree, they must hash to the
// signed root. Then the chunk's entries are in the signed tree, which
// extends the old one.
type pass struct {
	m      *Monitor
	t      *tiles
	old    *log.Checkpoint
	cp     *log.Checkpoint
	res    *Result
	emit   func([]logentry.Entry) error
	rng    *compact.Range // [0, end of the entries folded so far)
	okOld  bool           // the old tree's nodes hash to the old root
	chk    *tileCheck
	chunk  []logentry.Entry // matches of the current chunk
	badErr error            // the first entry of the chunk that does not decode
	newest time.Time        // the time of the newest entry read
	newIdx uint64           // its index
}

// run verifies every chunk and emits its matches.
func (p *pass) run(ctx context.Context) error {
	var err error
	if p.rng, err = p.t.prefix(ctx, p.old.Size); err != nil {
		return err
	}
	root := rfc6962.DefaultHasher.EmptyRoot()
	if p.old.Size > 0 {
		if root, err = p.rng.GetRootHash(nil); err != nil {
			return fmt.Errorf("monitor: %w", err)
		}
	}
	p.okOld = bytes.Equal(root, p.old.Hash)
	p.chk = newTileCheck(p.t)
	for from := p.old.Size; from < p.cp.Size; {
		to := min(p.cp.Size, (from/ChunkEntries+1)*ChunkEntries)
		if err := p.verifyChunk(ctx, from, to); err != nil {
			return err
		}
		from = to
	}
	return nil
}

// verifyChunk folds the entries [from, to), proves them in the signed
// tree, checks their tiles and entries, and emits their matches.
func (p *pass) verifyChunk(ctx context.Context, from, to uint64) error {
	p.chunk, p.badErr = p.chunk[:0], nil
	for ri := range layout.Range(from, to-from, p.cp.Size) {
		if err := p.fold(ctx, ri); err != nil {
			return err
		}
	}
	root, err := p.completedRoot(ctx, to)
	if err != nil {
		return err
	}
	if err := verdict(p.old, p.cp, p.okOld, bytes.Equal(root, p.cp.Hash), from, to); err != nil {
		return err
	}
	if err := p.chk.flush(ctx, true); err != nil {
		return err
	}
	if p.badErr != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, p.badErr)
	}
	p.res.Matched += len(p.chunk)
	if p.emit == nil || len(p.chunk) == 0 {
		return nil
	}
	return p.emit(p.chunk)
}

// completedRoot is the root of the folded range [0, to) completed with the
// tiles' nodes of [to, cp.Size).
func (p *pass) completedRoot(ctx context.Context, to uint64) ([]byte, error) {
	full, err := rangeFactory.NewRange(0, to, append([][]byte(nil), p.rng.Hashes()...))
	if err != nil {
		return nil, fmt.Errorf("monitor: %w", err)
	}
	if to < p.cp.Size {
		rest, err := p.t.nodes(ctx, to, p.cp.Size)
		if err != nil {
			return nil, err
		}
		if err := full.AppendRange(rest, nil); err != nil {
			return nil, fmt.Errorf("monitor: %w", err)
		}
	}
	root, err := full.GetRootHash(nil)
	if err != nil {
		return nil, fmt.Errorf("monitor: %w", err)
	}
	return root, nil
}

// newestName names the newest entry read, in this pass or an earlier one.
func (p *pass) newestName() string {
	if p.newIdx == 0 && p.old.Size > 0 {
		return "read by an earlier run"
	}
	return fmt.Sprintf("entry %d", p.newIdx)
}

// verdict turns the two root comparisons into an error: whether the old
// tree's nodes gave the saved root (okOld), and whether, with the entries
// [from, to), they gave the signed root (okNew).
func verdict(old, cp *log.Checkpoint, okOld, okNew bool, from, to uint64) error {
	switch {
	case okOld && okNew:
		return nil
	case okNew:
		// The signed tree commits to a first old.Size entries whose root is
		// not the saved one.
		return fmt.Errorf("%w: the log's signed tree of size %d does not extend the saved tree of size %d (its first %d entries have another root): the log was rewritten or forked; the state is kept",
			ErrFork, cp.Size, old.Size, old.Size)
	case okOld:
		return fmt.Errorf("%w: entries %d to %d and the hash tiles do not hash to the signed root of size %d: the server serves tiles or entries that are not the log it signed",
			ErrInvalid, from, to-1, cp.Size)
	}
	return fmt.Errorf("%w: the hash tiles hash neither to the saved root (size %d) nor, with the new entries, to the signed root (size %d): the server serves tiles that are not the log it signed",
		ErrInvalid, old.Size, cp.Size)
}

// fold reads the entries of one bundle range, folds their leaf hashes
// into the range, and decodes and matches them. A bundle the server has
// pruned contributes the level-0 tile's hashes instead, its content unread.
func (p *pass) fold(ctx context.Context, ri layout.RangeInfo) error {
	first := ri.Index*layout.EntryBundleWidth + uint64(ri.First)
	data, err := p.t.bundle(ctx, ri.Index)
	if errors.Is(err, errGone) {
		return p.foldPruned(ctx, ri)
	}
	if err != nil {
		return err
	}
	for i, d := range data[ri.First : ri.First+ri.N] {
		idx := first + uint64(i)
		if err := p.rng.Append(rfc6962.DefaultHasher.HashLeaf(d), p.chk.visit); err != nil {
			return fmt.Errorf("monitor: entry %d: %w", idx, err)
		}
		e, err := logentry.Decode(d, idx)
		if err != nil {
			if p.badErr == nil {
				p.badErr = err
			}
			continue
		}
		if !e.Time.Before(p.newest) {
			p.newest, p.newIdx = e.Time, idx
		}
		if p.m.cfg.Filter.Match(&e) {
			p.chunk = append(p.chunk, e)
		}
	}
	return p.chk.flush(ctx, false)
}

// foldPruned folds a pruned bundle's leaf hashes, read from its tile,
// unless an entry read before was logged too recently for any later one
// to have been pruned: then the server is hiding entries.
func (p *pass) foldPruned(ctx context.Context, ri layout.RangeInfo) error {
	cutoff := p.m.cfg.Clock.Now().Add(-p.m.cfg.Retention).Add(pruneSlack)
	if p.newest.After(cutoff) {
		return fmt.Errorf("%w: %s answers 410 Gone (pruned), but an entry before it (%s) was logged at %s, less than the CA's retention period (%s) ago, so no entry after it can have expired that long ago: the server is hiding entries",
			ErrInvalid, layout.EntriesPath(ri.Index, partial(p.t.width(0, ri.Index))), p.newestName(), p.newest.UTC().Format(time.RFC3339), p.m.cfg.Retention)
	}
	hashes, err := p.t.tile(ctx, 0, ri.Index)
	if err != nil {
		return err
	}
	for _, h := range hashes[ri.First : ri.First+ri.N] {
		if err := p.rng.Append(h, p.chk.visit); err != nil {
			return fmt.Errorf("monitor: %w", err)
		}
	}
	p.res.Pruned += uint64(ri.N)
	delete(p.chk.pending, [2]uint64{0, ri.Index}) // the tile itself: nothing to compare
	return nil
}
