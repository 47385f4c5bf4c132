package index

import (
	"bytes"
	"encoding/binary"
	"time"

	"github.com/castellan-dev/castellan/ca/ledger/tree"
	"github.com/castellan-dev/castellan/ca/store"
)

// PruneBatch bounds the entries one Prune transaction removes.
const PruneBatch = 1000

// PruneTx prunes up to PruneBatch entries that expired before cutoff.
func PruneTx(tx store.Tx, cutoff time.Time) (int, error) {
	end := binary.BigEndian.AppendUint64(nil, uint64(cutoff.UnixNano()))
	var keys [][]byte
	c := tree.Bucket(tx, bExpiry).Cursor()
	for k, _ := c.First(); k != nil && bytes.Compare(k[:8], end) < 0 && len(keys) < PruneBatch; k, _ = c.Next() {
		keys = append(keys, append([]byte(nil), k...))
	}
	ix := newIndexWriter(tx)
	entries := tree.Bucket(tx, tree.Entries)
	for _, k := range keys {
		idx := tree.IndexOf(k)
		e, err := ReadEntry(tx, idx)
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
