package edge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	cav1 "github.com/castellan-dev/castellan/api/castellan/ca/v1"
	"github.com/castellan-dev/castellan/ca/authz"
	"github.com/castellan-dev/castellan/ca/refusal"
	"github.com/castellan-dev/castellan/ca/store"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestEdgeMapsErrorsAndCountsCertificateCalls drives the edge with
// handlers that fail in each way a handler can: what the caller is told,
// and what is counted, for a certificate call and for another call.
func TestEdgeMapsErrorsAndCountsCertificateCalls(t *testing.T) {
	e := New(slog.New(slog.DiscardHandler), func(string) bool { return false })
	count := func(result, reason string) float64 { return testutil.ToFloat64(e.csrs.WithLabelValues(result, reason)) }
	secret := errors.New("open /var/lib/castellan/intermediate.key: permission denied")
	storeDown := fmt.Errorf("registry: %w", store.ErrUnavailable)
	for _, tc := range []struct {
		name           string
		err            error
		code           codes.Code
		msg            string
		result, reason string
	}{
		{"internal error", secret, codes.Internal, "server: internal error", ResultError, ReasonInternal},
		{"refusal", refusal.Errorf(codes.PermissionDenied, authz.ReasonNotAssigned, "authz: no entry"), codes.PermissionDenied, "authz: no entry", ResultRefused, authz.ReasonNotAssigned},
		{"failure with a cause", refusal.Failure(codes.Unavailable, "server: the issuance ledger is unavailable; retry later", storeDown),
			codes.Unavailable, "server: the issuance ledger is unavailable; retry later", ResultError, ReasonStoreUnavailable},
		{"store outage", storeDown, codes.Unavailable, "", ResultError, ReasonStoreUnavailable},
		{"success", nil, codes.OK, "", ResultIssued, ReasonOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := func(context.Context, any) (any, error) { return nil, tc.err }
			for _, method := range []string{cav1.CertificateAuthorityService_SignX509SVID_FullMethodName, cav1.CertificateAuthorityService_GetBundle_FullMethodName} {
				before := count(tc.result, tc.reason)
				_, err := e.Unary(context.Background(), nil, &grpc.UnaryServerInfo{FullMethod: method}, h)
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
				if got := count(tc.result, tc.reason) - before; got != want {
					t.Errorf("%s: castellan_csr_total{%s,%s} grew by %v, want %v", method, tc.result, tc.reason, got, want)
				}
			}
		})
	}
}
