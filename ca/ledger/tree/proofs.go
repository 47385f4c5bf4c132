package tree

import (
	"fmt"

	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/ca/store"
	"github.com/transparency-dev/merkle/proof"
)

// InclusionProof returns the read of the RFC 6962 inclusion proof of
// entry index in the tree of the given size, or the ErrInvalidArgument
// error of a bad request; it verifies with proof.VerifyInclusion from
// github.com/transparency-dev/merkle. size may be any size up to the
// stored log's.
func InclusionProof(index, size uint64) (TxRead[[][]byte], error) {
	if index >= size {
		return nil, fmt.Errorf("%w: no entry %d in a tree of size %d", entry.ErrInvalidArgument, index, size)
	}
	n, err := proof.Inclusion(index, size)
	if err != nil {
		return nil, fmt.Errorf("ledger: %w", err)
	}
	return proofRead(n, size, func(logSize uint64) error {
		return fmt.Errorf("%w: no entry %d in a tree of size %d (log size %d)", entry.ErrInvalidArgument, index, size, logSize)
	}), nil
}

// ConsistencyProof returns the read of the RFC 6962 consistency proof
// between trees of size1 and size2 (size1 <= size2 <= stored log size), or
// the ErrInvalidArgument error of a bad request.
func ConsistencyProof(size1, size2 uint64) (TxRead[[][]byte], error) {
	if size1 > size2 {
		return nil, fmt.Errorf("%w: cannot prove consistency from size %d to %d", entry.ErrInvalidArgument, size1, size2)
	}
	n, err := proof.Consistency(size1, size2)
	if err != nil {
		return nil, fmt.Errorf("ledger: %w", err)
	}
	return proofRead(n, size2, func(logSize uint64) error {
		return fmt.Errorf("%w: cannot prove consistency from size %d to %d (log size %d)", entry.ErrInvalidArgument, size1, size2, logSize)
	}), nil
}

// proofRead reads the nodes of a proof about a tree of size, which must
// not exceed the stored log (else tooBig's error).
func proofRead(n proof.Nodes, size uint64, tooBig func(logSize uint64) error) TxRead[[][]byte] {
	return func(tx store.Tx) ([][]byte, error) {
		st, err := Read(tx)
		if err != nil {
			return nil, err
		}
		if size > st.Size {
			return nil, tooBig(st.Size)
		}
		return ProofHashes(tx, n)
	}
}
