package admin

import (
	"context"
	"log/slog"
	"testing"

	"github.com/castellan-dev/castellan/ca/server/internal/peertest"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// On the TCP port, the admin API (and any service but the CA, health and
// public ones) is for the admin identities only: others are refused with
// PermissionDenied, callers without a certificate with Unauthenticated,
// and the handler never runs.
func TestGateAllowsOnlyAdmins(t *testing.T) {
	const admin, agent = "spiffe://example.org/castellan/agent/admin-node", "spiffe://example.org/castellan/agent/node-a"
	g := NewGate([]spiffeid.ID{spiffeid.RequireFromString(admin)},
		func(m string) bool { return m == "/istio.v1.auth.IstioCertificateService/CreateCertificate" }, slog.New(slog.DiscardHandler))
	for _, tc := range []struct {
		ctx    context.Context
		method string
		code   codes.Code
	}{
		{peertest.Context(t, admin, 1), "/castellan.admin.v1.AdminService/ListEntries", codes.OK},
		{peertest.Context(t, agent, 1), "/castellan.admin.v1.AdminService/ListEntries", codes.PermissionDenied},
		{context.Background(), "/castellan.admin.v1.AdminService/CreateJoinToken", codes.Unauthenticated},
		{peertest.Context(t, agent, 1), "/castellan.audit.v1.AuditService/ListCertificates", codes.PermissionDenied},
		{context.Background(), "/castellan.ca.v1.CertificateAuthorityService/AttestAgent", codes.OK},
		{context.Background(), "/grpc.health.v1.Health/Check", codes.OK},
		{context.Background(), "/istio.v1.auth.IstioCertificateService/CreateCertificate", codes.OK},
	} {
		ran := false
		_, err := g.Unary(tc.ctx, nil, &grpc.UnaryServerInfo{FullMethod: tc.method}, func(context.Context, any) (any, error) {
			ran = true
			return nil, nil
		})
		if status.Code(err) != tc.code || ran != (tc.code == codes.OK) {
			t.Errorf("%s: %v (handler ran: %v), want %v", tc.method, err, ran, tc.code)
		}
	}
}
