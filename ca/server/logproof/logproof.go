// Package logproof serves an agent what it needs to check that its
// certificates are in the witnessed issuance log: the latest witnessed
// checkpoint, a consistency proof from the size the agent accepted, and
// inclusion proofs of its entries (GetLogProof).
package logproof

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"

	cav1 "github.com/castellan-dev/castellan/api/castellan/ca/v1"
	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/ca/ledger/tree"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// MaxIndexes bounds the entries one GetLogProof proves (an agent's batch
// is at most 500).
const MaxIndexes = 500

// Prover is what GetLogProof needs of the ledger (*ledger.Ledger).
type Prover interface {
	// WitnessedCheckpoint returns the latest cosigned checkpoint, nil if none.
	WitnessedCheckpoint() []byte
	InclusionProof(index, size uint64) ([][]byte, error)
	ConsistencyProof(size1, size2 uint64) ([][]byte, error)
	EntryData(from, n uint64) ([][]byte, error)
}

// Serve answers GetLogProof from lp: the latest witnessed checkpoint, the
// consistency proof from the size the agent accepted, and inclusion
// proofs of the entries it asks about. The agent verifies everything;
// nothing here needs to be trusted. The caller is authenticated by the
// CA service.
func Serve(lp Prover, req *cav1.GetLogProofRequest) (*cav1.GetLogProofResponse, error) {
	if n := len(req.GetLogIndexes()); n > MaxIndexes {
		return nil, status.Errorf(codes.InvalidArgument, "server: %d log indexes asked; at most %d per call, split them", n, MaxIndexes)
	}
	cp := lp.WitnessedCheckpoint()
	if cp == nil {
		return nil, status.Error(codes.FailedPrecondition,
			"server: no witnessed checkpoint: the CA has no witness policy (--witness, --witness-policy) or its witnesses have not cosigned yet; see the server's log and castellan_witness_witnessed_size")
	}
	size, err := WitnessedSize(cp)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "server: %v", err)
	}
	resp := &cav1.GetLogProofResponse{Checkpoint: cp}
	if from := req.GetFromSize(); from > 0 && from < size {
		if resp.ConsistencyProof, err = lp.ConsistencyProof(from, size); err != nil {
			return nil, proofStatus(err)
		}
	}
	seen := map[uint64]bool{}
	for _, idx := range req.GetLogIndexes() {
		if idx >= size || seen[idx] {
			continue
		}
		seen[idx] = true
		inc, err := inclusion(lp, idx, size)
		if errors.Is(err, tree.ErrPruned) {
			continue // an expired certificate's entry: nothing to serve
		} else if err != nil {
			return nil, proofStatus(err)
		}
		resp.Inclusions = append(resp.Inclusions, inc)
	}
	return resp, nil
}

// inclusion returns entry idx and its inclusion proof in the tree of size.
func inclusion(lp Prover, idx, size uint64) (*cav1.LogInclusion, error) {
	data, err := lp.EntryData(idx, 1)
	if err != nil {
		return nil, err
	}
	if len(data) != 1 {
		return nil, fmt.Errorf("ledger returned %d entries for index %d", len(data), idx)
	}
	p, err := lp.InclusionProof(idx, size)
	if err != nil {
		return nil, err
	}
	return &cav1.LogInclusion{LogIndex: idx, Entry: data[0], Proof: p}, nil
}

// WitnessedSize reads the tree size line of a stored witnessed checkpoint.
func WitnessedSize(cp []byte) (uint64, error) {
	lines := bytes.SplitN(cp, []byte("\n"), 3)
	if len(lines) < 3 {
		return 0, errors.New("the stored witnessed checkpoint is malformed")
	}
	n, err := strconv.ParseUint(string(lines[1]), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("the stored witnessed checkpoint has a malformed size: %w", err)
	}
	return n, nil
}

// proofStatus maps a ledger error while proving to a status.
func proofStatus(err error) error {
	if errors.Is(err, entry.ErrClosed) {
		return status.Error(codes.Unavailable, "server: the ledger is closing; retry on another replica")
	}
	return status.Errorf(codes.Internal, "server: building a log proof: %v", err)
}
