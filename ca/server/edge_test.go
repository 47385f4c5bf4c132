package server

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	cav1 "github.com/castellan-dev/castellan/api/castellan/ca/v1"
	"github.com/castellan-dev/castellan/ca/authz"
	"github.com/castellan-dev/castellan/ca/refusal"
	"github.com/castellan-dev/castellan/ca/store"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestEdgeCountsEveryBatchItemOnce: a batch is counted item by item, and
// the call itself is not counted on top.
func TestEdgeCountsEveryBatchItemOnce(t *testing.T) {
	e := newEnv(t)
	e.addEntry(t, appID, "node-a")
	agent := e.agentClient(t, "node-a")
	reqs := mixedBatch(t, 8)
	issued, denied := e.csrCount(resultIssued, reasonOK), e.csrCount(resultRefused, authz.ReasonNotAssigned)
	if _, err := agent.BatchSignX509SVID(context.Background(), &cav1.BatchSignX509SVIDRequest{Requests: reqs}); err != nil {
		t.Fatal(err)
	}
	if got := e.csrCount(resultIssued, reasonOK) - issued; got != 6 {
		t.Errorf("castellan_csr_total{issued} grew by %v, want 6 (one per issued item, none for the call)", got)
	}
	if got := e.csrCount(resultRefused, authz.ReasonNotAssigned) - denied; got != 2 {
		t.Errorf("castellan_csr_total{refused,not_assigned} grew by %v, want 2", got)
	}
}

// TestEdgeMapsErrorsAndCountsCertificateCalls drives the edge with
// handlers that fail in each way a handler can: what the caller is told,
// and what is counted, for a certificate call and for another call.
func TestEdgeMapsErrorsAndCountsCertificateCalls(t *testing.T) {
	e := newEnv(t)
	secret := errors.New("open /var/lib/castellan/intermediate.key: permission denied")
	storeDown := fmt.Errorf("registry: %w", store.ErrUnavailable)
	for _, tc := range []struct {
		name           string
		err            error
		code           codes.Code
		msg            string
		result, reason string
	}{
		{"internal error", secret, codes.Internal, "server: internal error", resultError, reasonInternal},
		{"refusal", refusal.Errorf(codes.PermissionDenied, authz.ReasonNotAssigned, "authz: no entry"), codes.PermissionDenied, "authz: no entry", resultRefused, authz.ReasonNotAssigned},
		{"failure with a cause", refusal.Failure(codes.Unavailable, "server: the issuance ledger is unavailable; retry later", storeDown),
			codes.Unavailable, "server: the issuance ledger is unavailable; retry later", resultError, reasonStoreUnavailable},
		{"store outage", storeDown, codes.Unavailable, "", resultError, reasonStoreUnavailable},
		{"success", nil, codes.OK, "", resultIssued, reasonOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := func(context.Context, any) (any, error) { return nil, tc.err }
			for _, method := range []string{cav1.CertificateAuthorityService_SignX509SVID_FullMethodName, cav1.CertificateAuthorityService_GetBundle_FullMethodName} {
				before := e.csrCount(tc.result, tc.reason)
				_, err := e.srv.edgeUnary(context.Background(), nil, &grpc.UnaryServerInfo{FullMethod: method}, h)
				st := status.Convert(err)
				if st.Code() != tc.code || !strings.HasPrefix(st.Message(), tc.msg) {
					t.Errorf("%s: status %v %q, want %v %q", method, st.Code(), st.Message(), tc.code, tc.msg)
				}
				if strings.Contains(st.Message(), "intermediate.key") || strings.Contains(st.Message(), "registry:") {
					t.Errorf("%s: the caller is told the internal cause: %q", method, st.Message())
				}
				if method == cav1.CertificateAuthorityService_GetBundle_FullMethodName && strings.Contains(st.Message(), "signing") {
					t.Errorf("%s: %q speaks of signing in a call that signs nothing", method, st.Message())
				}
				want := 0.0
				if method == cav1.CertificateAuthorityService_SignX509SVID_FullMethodName {
					want = 1
				}
				if got := e.csrCount(tc.result, tc.reason) - before; got != want {
					t.Errorf("%s: castellan_csr_total{%s,%s} grew by %v, want %v", method, tc.result, tc.reason, got, want)
				}
			}
		})
	}
}
