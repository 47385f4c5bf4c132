package tree

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/ca/store"
	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/rfc6962"
)

// ErrPruned: a read of raw entries covers an entry whose content was
// pruned after its retention period (its leaf hash is still in the tree).
var ErrPruned = errors.New("ledger: entry pruned")

// MaxRangeRead bounds the nodes or entries one NodeHashes or EntryData
// call reads.
const MaxRangeRead = 256

// TxRead reads something from a transaction of the store.
type TxRead[T any] func(store.Tx) (T, error)

// NodeHashes returns the read of the stored hashes of the tree nodes at
// level (0 for leaves) with indices [from, from+n), in order, or the
// ErrInvalidArgument error of a bad request. Every one of them must be
// complete, that is cover only leaves below the current log size, or the
// read fails with ErrNotFound: a complete node never changes, so what
// NodeHashes returns for a range is the same at any later size. n is at
// most MaxRangeRead.
func NodeHashes(level uint8, from, n uint64) (TxRead[[][]byte], error) {
	if n == 0 || n > MaxRangeRead || level > 63 {
		return nil, fmt.Errorf("%w: %d nodes at level %d (1 to %d at levels 0 to 63)", entry.ErrInvalidArgument, n, level, MaxRangeRead)
	}
	return func(tx store.Tx) ([][]byte, error) {
		st, err := Read(tx)
		if err != nil {
			return nil, err
		}
		if !nodesComplete(level, from, n, st.Size) {
			return nil, fmt.Errorf("%w: nodes %d to %d at level %d are not all complete in a log of size %d", entry.ErrNotFound, from, from+n-1, level, st.Size)
		}
		out := make([][]byte, 0, n)
		for i := from; i < from+n; i++ {
			h, err := NodeHash(tx, compact.NewNodeID(uint(level), i))
			if err != nil {
				return nil, err
			}
			out = append(out, append([]byte(nil), h...))
		}
		return out, nil
	}, nil
}

// nodesComplete reports whether nodes [from, from+n) at level all cover
// leaves below size, without overflowing.
func nodesComplete(level uint8, from, n, size uint64) bool {
	end := from + n // one past the last node
	if end < from || end > size>>level {
		return false
	}
	return true
}

// EntryData returns the read of the exact stored leaf data of entries
// [from, from+n) (the bytes whose RFC 6962 leaf hash is in the tree), or
// the ErrInvalidArgument error of a bad request. Each is checked against
// its stored leaf hash, so damaged data is reported, not served. The
// whole range must be below the log size (else ErrNotFound) and unpruned
// (else ErrPruned, naming the first pruned index). n is at most
// MaxRangeRead.
func EntryData(from, n uint64) (TxRead[[][]byte], error) {
	if n == 0 || n > MaxRangeRead {
		return nil, fmt.Errorf("%w: %d entries (1 to %d)", entry.ErrInvalidArgument, n, MaxRangeRead)
	}
	return func(tx store.Tx) ([][]byte, error) {
		st, err := Read(tx)
		if err != nil {
			return nil, err
		}
		if !nodesComplete(0, from, n, st.Size) {
			return nil, fmt.Errorf("%w: entries %d to %d are not all in a log of size %d", entry.ErrNotFound, from, from+n-1, st.Size)
		}
		out := make([][]byte, 0, n)
		entries, nodes := NewSeqReader(Bucket(tx, Entries), from), NewSeqReader(Bucket(tx, Nodes), from)
		for i := from; i < from+n; i++ {
			data, err := checkedEntry(entries.Get(i), LeafHash(nodes.Get(i)), i)
			if err != nil {
				return nil, err
			}
			out = append(out, data)
		}
		return out, nil
	}, nil
}

// checkedEntry copies stored entry data after checking it against the
// stored leaf hash lh.
func checkedEntry(v, lh []byte, i uint64) ([]byte, error) {
	switch {
	case v == nil || lh == nil:
		return nil, fmt.Errorf("ledger: entry %d is missing from the file", i)
	case IsPruned(v):
		return nil, fmt.Errorf("%w: entry %d (only its leaf hash is kept)", ErrPruned, i)
	case !bytes.Equal(rfc6962.DefaultHasher.HashLeaf(v), lh):
		return nil, fmt.Errorf("ledger: entry %d is damaged: its data does not match its leaf hash", i)
	}
	return append([]byte(nil), v...), nil
}
