package ledger

import (
	"fmt"

	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/ca/ledger/tree"
	"github.com/castellan-dev/castellan/ca/store"
	"github.com/transparency-dev/merkle/proof"
)

// InclusionProof returns the RFC 6962 inclusion proof of entry index in the
// tree of the given size; it verifies with proof.VerifyInclusion from
// github.com/transparency-dev/merkle. size may be any size up to the
// stored log's (on a shared store, including other replicas' appends).
func (l *Ledger) InclusionProof(index, size uint64) ([][]byte, error) {
	if index >= size {
		return nil, fmt.Errorf("%w: no entry %d in a tree of size %d", entry.ErrInvalidArgument, index, size)
	}
	n, err := proof.Inclusion(index, size)
	if err != nil {
		return nil, fmt.Errorf("ledger: %w", err)
	}
	return l.proof(n, size, func(logSize uint64) error {
		return fmt.Errorf("%w: no entry %d in a tree of size %d (log size %d)", entry.ErrInvalidArgument, index, size, logSize)
	})
}

// ConsistencyProof returns the RFC 6962 consistency proof between trees of
// size1 and size2 (size1 <= size2 <= stored log size).
func (l *Ledger) ConsistencyProof(size1, size2 uint64) ([][]byte, error) {
	if size1 > size2 {
		return nil, fmt.Errorf("%w: cannot prove consistency from size %d to %d", entry.ErrInvalidArgument, size1, size2)
	}
	n, err := proof.Consistency(size1, size2)
	if err != nil {
		return nil, fmt.Errorf("ledger: %w", err)
	}
	return l.proof(n, size2, func(logSize uint64) error {
		return fmt.Errorf("%w: cannot prove consistency from size %d to %d (log size %d)", entry.ErrInvalidArgument, size1, size2, logSize)
	})
}

// proof reads the nodes of a proof about a tree of size, which must not
// exceed the stored log (else tooBig's error).
func (l *Ledger) proof(n proof.Nodes, size uint64, tooBig func(logSize uint64) error) ([][]byte, error) {
	var out [][]byte
	err := l.view(l.ctx, func(tx store.Tx) error {
		st, err := tree.Read(tx)
		if err != nil {
			return err
		}
		if size > st.Size {
			return tooBig(st.Size)
		}
		out, err = tree.ProofHashes(tx, n)
		return err
	})
	return out, err
}
