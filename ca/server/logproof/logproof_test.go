package logproof

import (
	"errors"
	"strings"
	"testing"

	cav1 "github.com/castellan-dev/castellan/api/castellan/ca/v1"
	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/ca/ledger/tree"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// prover is a ledger with a stored checkpoint and no entries.
type prover struct {
	cp  []byte
	err error // of every proof
}

func (p prover) WitnessedCheckpoint() []byte { return p.cp }
func (p prover) InclusionProof(uint64, uint64) ([][]byte, error) {
	return nil, p.err
}
func (p prover) ConsistencyProof(uint64, uint64) ([][]byte, error) { return nil, p.err }
func (p prover) EntryData(uint64, uint64) ([][]byte, error)        { return nil, p.err }

const checkpoint = "example.org/castellan/ledger\n12\nAAAA\n\n— sig\n"

// Each way GetLogProof cannot answer has its own status and says why.
func TestServeRefusals(t *testing.T) {
	for _, tc := range []struct {
		name string
		p    prover
		req  *cav1.GetLogProofRequest
		code codes.Code
		msg  string
	}{
		{"too many indexes", prover{cp: []byte(checkpoint)}, &cav1.GetLogProofRequest{LogIndexes: make([]uint64, MaxIndexes+1)}, codes.InvalidArgument, "at most 500"},
		{"no witnessed checkpoint", prover{}, &cav1.GetLogProofRequest{}, codes.FailedPrecondition, "no witnessed checkpoint"},
		{"malformed checkpoint", prover{cp: []byte("origin\nnot-a-number\n")}, &cav1.GetLogProofRequest{}, codes.Internal, "malformed size"},
		{"ledger closing", prover{cp: []byte(checkpoint), err: entry.ErrClosed}, &cav1.GetLogProofRequest{FromSize: 3}, codes.Unavailable, "closing"},
		{"proof fails", prover{cp: []byte(checkpoint), err: errors.New("bad page")}, &cav1.GetLogProofRequest{LogIndexes: []uint64{1}}, codes.Internal, "bad page"},
	} {
		_, err := Serve(tc.p, tc.req)
		if st := status.Convert(err); st.Code() != tc.code || !strings.Contains(st.Message(), tc.msg) {
			t.Errorf("%s: %v %q, want %v containing %q", tc.name, st.Code(), st.Message(), tc.code, tc.msg)
		}
	}
}

// Indexes at or past the witnessed size, repeated ones and pruned
// entries are left out; the checkpoint is served as stored.
func TestServeSkipsWhatItCannotProve(t *testing.T) {
	resp, err := Serve(prover{cp: []byte(checkpoint), err: tree.ErrPruned}, &cav1.GetLogProofRequest{LogIndexes: []uint64{12, 40, 3, 3}})
	if err != nil {
		t.Fatal(err)
	}
	if string(resp.GetCheckpoint()) != checkpoint || len(resp.GetInclusions()) != 0 {
		t.Fatalf("got checkpoint %q and %d inclusions; want the stored one and none", resp.GetCheckpoint(), len(resp.GetInclusions()))
	}
	if n, err := WitnessedSize([]byte(checkpoint)); err != nil || n != 12 {
		t.Fatalf("WitnessedSize: %d, %v; want 12", n, err)
	}
}
