package server

import (
	"bytes"
	"context"
	"crypto/elliptic"
	"encoding/base64"
	"strings"
	"testing"

	cav1 "github.com/castellan-dev/castellan/api/castellan/ca/v1"
	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/ca/server/logproof"
	"github.com/transparency-dev/formats/log"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// witnessCheckpoint stores the ledger's current checkpoint as witnessed
// (a stand-in cosignature line: the ledger does not check cosignatures)
// and returns its contents.
func witnessCheckpoint(t *testing.T, e *env) *log.Checkpoint {
	t.Helper()
	ctx := context.Background()
	cp, err := e.ledger.Checkpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cosigned := append(bytes.Clone(cp), "\u2014 w.test/a "+base64.StdEncoding.EncodeToString(make([]byte, 76))+"\n"...)
	if err := e.ledger.StoreWitnessedCheckpoint(ctx, cosigned); err != nil {
		t.Fatal(err)
	}
	v, err := note.NewVerifier(e.ledger.VerifierKey())
	if err != nil {
		t.Fatal(err)
	}
	n, err := note.Open(cp, note.VerifierList(v))
	if err != nil {
		t.Fatal(err)
	}
	var c log.Checkpoint
	if _, err := c.Unmarshal([]byte(n.Text)); err != nil {
		t.Fatal(err)
	}
	return &c
}

// Each issued SVID carries the index of its own ledger entry (a refused
// request in the middle of a batch shifts nothing), and GetLogProof
// proves it with the third-party merkle library alone.
func TestIssuanceCarriesLogIndexAndProofVerifies(t *testing.T) {
	e := newEnv(t)
	ent := e.addEntry(t, appID, "node-a")
	agent := e.agentClient(t, "node-a")
	ctx := context.Background()
	key := ecKey(t, elliptic.P256())
	before := witnessCheckpoint(t, e)
	req := &cav1.BatchSignX509SVIDRequest{Requests: []*cav1.SignX509SVIDRequest{
		{Csr: workloadCSR(t, key, appID), EntryId: ent.Id},
		{Csr: []byte("not a CSR"), EntryId: ent.Id},
		{Csr: workloadCSR(t, key, appID), EntryId: ent.Id},
	}}
	resp, err := agent.BatchSignX509SVID(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	var idx []uint64
	for i, r := range resp.GetResults() {
		if i == 1 {
			if r.GetSvid() != nil {
				t.Fatal("the bad CSR was signed")
			}
			continue
		}
		svid := r.GetSvid()
		if svid.LogIndex == nil {
			t.Fatalf("result %d has no log index", i)
		}
		rec, err := e.ledger.Get(ctx, svid.GetSerial())
		if err != nil || rec.Index != svid.GetLogIndex() {
			t.Fatalf("result %d: log index %d, ledger has it at %d (%v)", i, svid.GetLogIndex(), rec.Index, err)
		}
		idx = append(idx, svid.GetLogIndex())
	}
	cp := witnessCheckpoint(t, e)
	pr, err := agent.GetLogProof(ctx, &cav1.GetLogProofRequest{FromSize: before.Size, LogIndexes: append(idx, cp.Size+10)})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(pr.GetCheckpoint()), "\u2014 w.test/a ") {
		t.Fatalf("GetLogProof did not serve the witnessed checkpoint: %q", pr.GetCheckpoint())
	}
	if err := proof.VerifyConsistency(rfc6962.DefaultHasher, before.Size, cp.Size, pr.GetConsistencyProof(), before.Hash, cp.Hash); err != nil {
		t.Fatalf("consistency proof: %v", err)
	}
	if len(pr.GetInclusions()) != len(idx) {
		t.Fatalf("%d inclusions, want %d (an index beyond the checkpoint is left out)", len(pr.GetInclusions()), len(idx))
	}
	for i, inc := range pr.GetInclusions() {
		if inc.GetLogIndex() != idx[i] {
			t.Fatalf("inclusion %d is for index %d, want %d", i, inc.GetLogIndex(), idx[i])
		}
		leaf := rfc6962.DefaultHasher.HashLeaf(inc.GetEntry())
		if err := proof.VerifyInclusion(rfc6962.DefaultHasher, inc.GetLogIndex(), cp.Size, leaf, inc.GetProof(), cp.Hash); err != nil {
			t.Fatalf("inclusion of %d: %v", inc.GetLogIndex(), err)
		}
		if ent, err := entry.Decode(inc.GetEntry()); err != nil || ent.Index != idx[i] || ent.Kind != entry.KindIssuance {
			t.Fatalf("entry %d decodes to %+v, %v", idx[i], ent, err)
		}
	}
}

func TestGetLogProofRefusals(t *testing.T) {
	e := newEnv(t)
	agent := e.agentClient(t, "node-a")
	ctx := context.Background()
	_, err := agent.GetLogProof(ctx, &cav1.GetLogProofRequest{})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "no witnessed checkpoint") {
		t.Fatalf("without a witnessed checkpoint: %v, want FailedPrecondition saying so", err)
	}
	witnessCheckpoint(t, e)
	_, err = agent.GetLogProof(ctx, &cav1.GetLogProofRequest{LogIndexes: make([]uint64, logproof.MaxIndexes+1)})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "split them") {
		t.Fatalf("too many indexes: %v, want InvalidArgument", err)
	}
	if _, err := e.anonClient(t).GetLogProof(ctx, &cav1.GetLogProofRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("anonymous caller: %v, want Unauthenticated", err)
	}
	// A size beyond the witnessed checkpoint gets the checkpoint and no
	// proof (the agent keeps its own, larger one).
	pr, err := agent.GetLogProof(ctx, &cav1.GetLogProofRequest{FromSize: 1 << 40, LogIndexes: []uint64{0, 0, 0}})
	if err != nil || len(pr.GetConsistencyProof()) != 0 || len(pr.GetInclusions()) != 1 {
		t.Fatalf("from a larger size, repeated index: %v, %d proof hashes, %d inclusions; want none and one", err, len(pr.GetConsistencyProof()), len(pr.GetInclusions()))
	}
}
