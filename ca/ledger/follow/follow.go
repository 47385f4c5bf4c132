package follow

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/ca/ledger/index"
	"github.com/castellan-dev/castellan/ca/ledger/tree"
	"github.com/castellan-dev/castellan/ca/store"
)

// Publishing. What the ledger keeps in memory (the tree head, the
// revocations and bans in force, the latest checkpoint, the index
// position) follows the log: every committed entry is applied to it once,
// in log order, by apply, before anyone is told of it (OnRevoke, the
// RevocationsChanged, BansChanged and Watch signals). On a store of its
// own, the ledger's committer is the only writer and publishes its
// commits. On a shared store (store.DB.Shared), other replicas append
// too: a follower (runFollower) wakes on the store's change signal, and
// at least every followInterval, reads the entries appended since the
// published head and applies them; and the committer, when the batch it
// committed starts beyond the published head, first reads and applies the
// entries in between. pubMu serializes both, and the published head says
// what was applied, so nothing is applied twice or out of order.
//
// Each append writes its own index entries in its transaction when the
// stored index position is where it begins (appendTx), so on every
// replica an entry is indexed once it is durable. A backlog (entries
// appended by an older binary, or while indexing failed) is the
// indexer's: the committer kicks it when an append left one, and a query
// on any replica hurries its own indexer, which indexes whatever is left,
// so no entry is ever left out.
//
// Each entry read from the store extends the published tree by its
// stored leaf hash; when the new head reaches the stored tree head, the
// two must be the same tree, or the store's log is not an extension of
// what this replica published (rewritten or rolled back history), which
// is reported and never applied.

// followInterval is how often a replica on a shared store looks for the
// other replicas' appends when no change signal arrived.
const followInterval = time.Second

// followDelay is how long the follower lets changes accumulate after a
// change signal before it reads them: under load one read then serves
// many commits (its own included, which the signal also reports).
const followDelay = 20 * time.Millisecond

// ErrNotExtension: the stored log does not extend the published one.
var ErrNotExtension = errors.New("ledger: the stored log is not an extension of the log this replica published; it was rewritten or rolled back (run castellanctl ledger verify against a saved checkpoint)")

// Run publishes the other replicas' appends until stop is closed.
func Run(p *Published, stop <-chan struct{}) {
	t := time.NewTicker(followInterval)
	defer t.Stop()
	var failing error
	for {
		changed := p.c.Changed() // before reading: no change is missed
		err := FollowTo(p, p.c.Ctx, math.MaxUint64)
		switch {
		case err != nil && failing == nil && p.c.Ctx.Err() == nil:
			p.c.Log.Error("ledger: cannot follow the shared log; other replicas' entries, revocations and bans are not seen until it recovers", "error", err)
		case err == nil && failing != nil:
			p.c.Log.Info("ledger: following the shared log again")
		}
		failing = err
		select {
		case <-stop:
			return
		case <-changed:
			if !pause(stop, followDelay) {
				return
			}
		case <-t.C:
		}
	}
}

// pause waits d, or until stop is closed (then false).
func pause(stop <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-stop:
		return false
	case <-t.C:
		return true
	}
}

// FollowTo publishes, pubMu held, the stored entries from the published
// head up to index to (exclusive), or to the stored head if it is
// smaller.
func FollowTo(p *Published, ctx context.Context, to uint64) error {
	p.pubMu.Lock()
	defer p.pubMu.Unlock()
	return p.followLocked(ctx, to)
}

// followLocked publishes the stored entries from the published head up
// to index to (exclusive), or to the stored head if it is smaller, one
// read transaction of at most chunk entries at a time. pubMu is held.
func (p *Published) followLocked(ctx context.Context, to uint64) error {
	for {
		done, err := p.followStep(ctx, to)
		if err != nil || done {
			return err
		}
	}
}

// followed is what one follow transaction read: the stored head, the
// stored checkpoint and index position, and the entries after the
// published head (their events and leaf hashes).
type followed struct {
	stored    tree.Head
	cp        []byte
	indexed   uint64
	evs       []entry.Event
	leafs     [][]byte
	undecoded []uint64 // entries that cannot be decoded (published without effect)
}

// followStep publishes up to chunk entries and reports whether the head
// reached min(to, stored head).
func (p *Published) followStep(ctx context.Context, to uint64) (bool, error) {
	p.mu.Lock()
	head := p.head
	p.mu.Unlock()
	var f followed
	if err := p.c.View(ctx, func(tx store.Tx) error { return f.read(tx, head.Size, to) }); err != nil {
		return false, fmt.Errorf("ledger: follow: %w", err)
	}
	p.c.Stored(f.cp)
	p.c.Indexed(f.indexed)
	if f.stored.Size < head.Size {
		return false, fmt.Errorf("%w: the store holds %d entries, this replica published %d", ErrNotExtension, f.stored.Size, head.Size)
	}
	for _, i := range f.undecoded {
		p.c.Log.Error("ledger entry appended by another replica cannot be decoded; its revocation or ban, if any, is not applied", "index", i)
	}
	if len(f.leafs) == 0 {
		return true, nil
	}
	next, err := extend(head, f.leafs)
	if err != nil {
		return false, err
	}
	if next.Size == f.stored.Size && !slices.EqualFunc(next.Hashes, f.stored.Hashes, bytes.Equal) {
		return false, fmt.Errorf("%w: at size %d", ErrNotExtension, next.Size)
	}
	p.apply(next, head.Size, f.evs)
	return next.Size >= min(to, f.stored.Size), nil
}

// read reads the stored head and the entries [from, min(to, head, from+chunk)).
func (f *followed) read(tx store.Tx, from, to uint64) error {
	st, err := tree.Read(tx)
	if err != nil {
		return err
	}
	f.stored, f.indexed = st, index.Stored(tx)
	if cp := tree.Bucket(tx, tree.Meta).Get(tree.KeyCheckpoint); cp != nil {
		f.cp = append([]byte(nil), cp...)
	}
	end := min(to, st.Size, from+chunk)
	if from >= end {
		return nil
	}
	entries, nodes := tree.NewSeqReader(tree.Bucket(tx, tree.Entries), from), tree.NewSeqReader(tree.Bucket(tx, tree.Nodes), from)
	for i := from; i < end; i++ {
		lh := tree.LeafHash(nodes.Get(i))
		if lh == nil {
			return fmt.Errorf("%w: the leaf hash of entry %d is missing", entry.ErrDamaged, i)
		}
		f.leafs = append(f.leafs, append([]byte(nil), lh...))
		var ev entry.Event // a pruned or undecodable entry changes nothing
		if v := entries.Get(i); v != nil && !tree.IsPruned(v) {
			if e, err := entry.DecodeEvent(v); err == nil && e.Index == i {
				ev = e.Event
			} else {
				f.undecoded = append(f.undecoded, i)
			}
		}
		f.evs = append(f.evs, ev)
	}
	return nil
}

// extend returns the tree head after appending leaf hashes to head.
func extend(head tree.Head, leafs [][]byte) (tree.Head, error) {
	r, err := head.Range()
	if err != nil {
		return tree.Head{}, err
	}
	for _, h := range leafs {
		if err := r.Append(h, nil); err != nil {
			return tree.Head{}, fmt.Errorf("ledger: follow: %w", err)
		}
	}
	return tree.Head{Size: r.End(), Hashes: r.Hashes()}, nil
}
