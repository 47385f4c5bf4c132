package ledger

import (
	"github.com/castellan-dev/castellan/ca/ledger/tree"
	"github.com/castellan-dev/castellan/ca/store"
)

// InclusionProof returns the RFC 6962 inclusion proof of entry index in the
// tree of the given size; it verifies with proof.VerifyInclusion from
// github.com/transparency-dev/merkle. size may be any size up to the
// stored log's (on a shared store, including other replicas' appends).
func (l *Ledger) InclusionProof(index, size uint64) ([][]byte, error) {
	return l.readTree(tree.InclusionProof(index, size))
}

// ConsistencyProof returns the RFC 6962 consistency proof between trees of
// size1 and size2 (size1 <= size2 <= stored log size).
func (l *Ledger) ConsistencyProof(size1, size2 uint64) ([][]byte, error) {
	return l.readTree(tree.ConsistencyProof(size1, size2))
}

// NodeHashes returns the stored hashes of the tree nodes at level (0 for
// leaves) with indices [from, from+n), in order. Every one of them must be
// complete, that is cover only leaves below the current log size, or the
// result is ErrNotFound: a complete node never changes, so what NodeHashes
// returns for a range is the same at any later size. n is at most
// tree.MaxRangeRead.
func (l *Ledger) NodeHashes(level uint8, from, n uint64) ([][]byte, error) {
	return l.readTree(tree.NodeHashes(level, from, n))
}

// EntryData returns the exact stored leaf data of entries [from, from+n):
// the bytes whose RFC 6962 leaf hash is in the tree. Each is checked
// against its stored leaf hash, so damaged data is reported, not served.
// The whole range must be below the log size (else ErrNotFound) and
// unpruned (else tree.ErrPruned, naming the first pruned index). n is at
// most tree.MaxRangeRead.
func (l *Ledger) EntryData(from, n uint64) ([][]byte, error) {
	return l.readTree(tree.EntryData(from, n))
}

// readTree runs read, unless the request was refused (err), in a read
// transaction with the ledger's lifetime as context.
func (l *Ledger) readTree(read tree.TxRead[[][]byte], err error) ([][]byte, error) {
	if err != nil {
		return nil, err
	}
	var out [][]byte
	err = l.view(l.ctx, func(tx store.Tx) error {
		var err error
		out, err = read(tx)
		return err
	})
	return out, err
}
