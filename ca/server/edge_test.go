package server

import (
	"context"
	"testing"

	cav1 "github.com/castellan-dev/castellan/api/castellan/ca/v1"
	"github.com/castellan-dev/castellan/ca/authz"
	"github.com/castellan-dev/castellan/ca/server/edge"
)

// TestEdgeCountsEveryBatchItemOnce: a batch is counted item by item, and
// the call itself is not counted on top.
func TestEdgeCountsEveryBatchItemOnce(t *testing.T) {
	e := newEnv(t)
	e.addEntry(t, appID, "node-a")
	agent := e.agentClient(t, "node-a")
	reqs := mixedBatch(t, 8)
	issued, denied := e.csrCount(edge.ResultIssued, edge.ReasonOK), e.csrCount(edge.ResultRefused, authz.ReasonNotAssigned)
	if _, err := agent.BatchSignX509SVID(context.Background(), &cav1.BatchSignX509SVIDRequest{Requests: reqs}); err != nil {
		t.Fatal(err)
	}
	if got := e.csrCount(edge.ResultIssued, edge.ReasonOK) - issued; got != 6 {
		t.Errorf("castellan_csr_total{issued} grew by %v, want 6 (one per issued item, none for the call)", got)
	}
	if got := e.csrCount(edge.ResultRefused, authz.ReasonNotAssigned) - denied; got != 2 {
		t.Errorf("castellan_csr_total{refused,not_assigned} grew by %v, want 2", got)
	}
}
