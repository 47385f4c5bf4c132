package ledger

import (
	"github.com/castellan-dev/castellan/ca/ledger/agents"
	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/ca/ledger/index"
	"github.com/castellan-dev/castellan/ca/ledger/revocation"
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
	if err := revocation.Load(l.Set, tx); err != nil {
		return err
	}
	if err := agents.Load(l.Registry, tx); err != nil {
		return err
	}
	if err := l.load(tx); err != nil {
		return err
	}
	indexed, size := index.Position(l.Index), l.Size()
	if indexed >= size {
		return nil
	}
	entries := tree.NewSeqReader(tree.Bucket(tx, tree.Entries), indexed)
	for i := indexed; i < size; i++ {
		v := entries.Get(i)
		if v == nil || tree.IsPruned(v) {
			continue
		}
		if e, err := entry.DecodeEvent(v); err == nil {
			evs := []entry.Event{e.Event}
			revocation.Apply(l.Set, i, evs)
			agents.Apply(l.Registry, i, evs)
		}
	}
	return nil
}
