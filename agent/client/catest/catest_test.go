package catest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"testing"
	"time"

	cav1 "github.com/castellan-dev/castellan/api/castellan/ca/v1"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

var td = spiffeid.RequireTrustDomainFromString("cluster.local")

// anonClient dials r without a client certificate, verifying the CA.
func anonClient(t *testing.T, ca *CA, r *Replica) cav1.CertificateAuthorityServiceClient {
	t.Helper()
	tc := tlsconfig.TLSClientConfig(ca.Bundle(), tlsconfig.AuthorizeID(spiffeid.RequireFromPath(td, "/castellan/server")))
	conn, err := grpc.NewClient(r.Addr(), grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return cav1.NewCertificateAuthorityServiceClient(conn)
}

// attest asks the real CA for an agent SVID with token.
func attest(ctx context.Context, t *testing.T, c cav1.CertificateAuthorityServiceClient, token string) error {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.AttestAgent(ctx, &cav1.AttestAgentRequest{Csr: csr,
		Attestation: &cav1.AttestAgentRequest_JoinToken{JoinToken: token}})
	return err
}

// An injected error reaches the caller with its code, message and
// details; it applies to the number of calls asked for, then the real CA
// answers (and enforces its own rules: a join token is one-time).
func TestInjectedErrorReachesTheCallerIntact(t *testing.T) {
	ca := New(t, td)
	r := ca.Serve(t)
	c := anonClient(t, ca, r)
	st, err := status.New(codes.ResourceExhausted, "catest: quota 100% used").WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(3 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	r.Inject(MethodAttest, 1, Fault{Err: st.Err()})
	token := ca.JoinToken(t, "node-1")
	err = attest(t.Context(), t, c, token)
	got := status.Convert(err)
	if got.Code() != codes.ResourceExhausted || got.Message() != "catest: quota 100% used" || len(got.Details()) != 1 {
		t.Fatalf("injected error arrived as %v (details %v)", err, got.Details())
	}
	if ri, ok := got.Details()[0].(*errdetails.RetryInfo); !ok || ri.GetRetryDelay().AsDuration() != 3*time.Second {
		t.Fatalf("details %v, want the RetryInfo", got.Details())
	}
	if err := attest(t.Context(), t, c, token); err != nil {
		t.Fatalf("the call after the one faulted: %v", err)
	}
	if err := attest(t.Context(), t, c, token); status.Code(err) == codes.OK {
		t.Fatal("the real CA accepted a join token twice")
	}
	if n := r.Calls(); n != 3 {
		t.Fatalf("replica counted %d calls, want 3", n)
	}
}

// A delay holds a call at least that long before the real CA answers; a
// hang holds it until the caller gives up; a fault of one method leaves
// the others alone.
func TestDelayAndHang(t *testing.T) {
	ca := New(t, td)
	r := ca.Serve(t)
	c := anonClient(t, ca, r)
	ca.Inject(MethodAttest, 1, Fault{Delay: 300 * time.Millisecond})
	ca.Inject(MethodBatchSign, -1, Fault{Hang: true})
	start := time.Now()
	if err := attest(t.Context(), t, c, ca.JoinToken(t, "node-1")); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Fatalf("delayed call answered after %v", d)
	}
	ca.Inject(MethodAttest, -1, Fault{Hang: true})
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	if err := attest(ctx, t, c, ca.JoinToken(t, "node-2")); status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("hung call: %v, want DeadlineExceeded", err)
	}
	ca.Inject(MethodAttest, 0, Fault{})
	if _, err := c.GetBundle(t.Context(), &cav1.GetBundleRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("GetBundle without an agent SVID: %v; want the real CA's Unauthenticated", err)
	}
}
