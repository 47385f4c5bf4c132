package ledger

import (
	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/ca/ledger/index"
	"github.com/castellan-dev/castellan/ca/ledger/tree"
	"github.com/castellan-dev/castellan/ca/store"
)

// catchUp indexes every stored entry and loads the state that follows
// from the log (Open, New).
func (l *Ledger) catchUp() error {
	if err := index.CatchUp(l.Index); err != nil {
		return err
	}
	return l.view(l.ctx, l.loadState)
}

// loadState loads, from one snapshot, the tree head, the latest
// checkpoint, the index position and the revocations and bans in force:
// from the indexes, then from the entries not yet indexed (on a shared
// store another replica may append after catchUp's last step).
func (l *Ledger) loadState(tx store.Tx) error {
	if err := l.loadRevoked(tx); err != nil {
		return err
	}
	if err := l.load(tx); err != nil {
		return err
	}
	indexed := index.Position(l.Index)
	if indexed >= l.head.Size {
		return nil
	}
	entries := tree.NewSeqReader(tree.Bucket(tx, tree.Entries), indexed)
	for i := indexed; i < l.head.Size; i++ {
		v := entries.Get(i)
		if v == nil || tree.IsPruned(v) {
			continue
		}
		if e, err := entry.DecodeEvent(v); err == nil {
			l.foldLocked(i, &e.Event) // no waiter exists yet
		}
	}
	return nil
}

// loadRevoked loads the revocations and the bans in force.
func (l *Ledger) loadRevoked(tx store.Tx) error {
	l.revoked = map[string]index.Revoked{}
	if err := index.ForEachRevoked(tx, func(serial string, r index.Revoked) error {
		l.revoked[serial] = r
		return nil
	}); err != nil {
		return err
	}
	return l.loadBans(tx)
}
