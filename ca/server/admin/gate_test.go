package admin

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"math/big"
	"net/url"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// as returns a context whose verified client certificate names id.
func as(t *testing.T, id string) context.Context {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(id)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), URIs: []*url.URL{u},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	info := credentials.TLSInfo{State: tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{leaf}}}}
	return peer.NewContext(context.Background(), &peer.Peer{AuthInfo: info})
}

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
		{as(t, admin), "/castellan.admin.v1.AdminService/ListEntries", codes.OK},
		{as(t, agent), "/castellan.admin.v1.AdminService/ListEntries", codes.PermissionDenied},
		{context.Background(), "/castellan.admin.v1.AdminService/CreateJoinToken", codes.Unauthenticated},
		{as(t, agent), "/castellan.audit.v1.AuditService/ListCertificates", codes.PermissionDenied},
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
