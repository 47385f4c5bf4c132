package server

import (
	"context"
	"crypto/elliptic"
	"strings"
	"testing"

	cav1 "github.com/castellan-dev/castellan/api/castellan/ca/v1"
	"github.com/castellan-dev/castellan/internal/serial"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestRevokedAgentCanNeitherSignNorRenewNorSync(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.addEntry(t, "spiffe://cluster.local/app", "node-a")
	agent := e.attest(t, "node-a")
	_, c := e.dial(t, e.mtlsConfig(agent))
	key := ecKey(t, elliptic.P256())
	if _, err := c.SignX509SVID(ctx, &cav1.SignX509SVIDRequest{Csr: workloadCSR(t, key, "spiffe://cluster.local/app")}); err != nil {
		t.Fatalf("before revocation: %v", err)
	}
	serial := serial.FromBig(agent.Certificates[0].SerialNumber).String()
	if _, err := e.ledger.Revoke(ctx, serial, "keyCompromise"); err != nil {
		t.Fatal(err)
	}
	wantRevoked := func(what string, err error) {
		t.Helper()
		if status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "revoked") || !strings.Contains(err.Error(), serial) {
			t.Errorf("%s after revocation: got %v, want Unauthenticated naming the revoked serial %s", what, err, serial)
		}
	}
	_, err := c.SignX509SVID(ctx, &cav1.SignX509SVIDRequest{Csr: workloadCSR(t, key, "spiffe://cluster.local/app")})
	wantRevoked("SignX509SVID", err)
	_, err = c.RenewAgent(ctx, &cav1.RenewAgentRequest{Csr: agentCSR(t, key)})
	wantRevoked("RenewAgent", err)
	stream, err := c.SyncAgent(ctx, &cav1.SyncAgentRequest{})
	if err == nil {
		_, err = stream.Recv()
	}
	wantRevoked("SyncAgent", err)

	// Another agent is unaffected.
	_, other := e.dial(t, e.mtlsConfig(e.attest(t, "node-b")))
	if _, err := other.GetBundle(ctx, &cav1.GetBundleRequest{}); err != nil {
		t.Errorf("unrevoked agent: %v", err)
	}
}
