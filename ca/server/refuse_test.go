package server

import (
	"context"
	"crypto/elliptic"
	"crypto/x509/pkix"
	"encoding/asn1"
	"net"
	"strings"
	"testing"
	"time"

	cav1 "github.com/castellan-dev/castellan/api/castellan/ca/v1"
	"github.com/castellan-dev/castellan/ca/authn"
	"github.com/castellan-dev/castellan/ca/authority"
	"github.com/castellan-dev/castellan/ca/authority/leaf"
	"github.com/castellan-dev/castellan/ca/authz"
	"github.com/castellan-dev/castellan/ca/server/edge"
	"github.com/castellan-dev/castellan/ca/server/issuance"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

const appID = "spiffe://cluster.local/ns/default/sa/app"

// resign replaces the signature of a DER CSR with sig.
func resign(t *testing.T, der []byte, mutate func([]byte) []byte) []byte {
	t.Helper()
	var csr struct {
		TBS    asn1.RawValue
		SigAlg pkix.AlgorithmIdentifier
		Sig    asn1.BitString
	}
	if _, err := asn1.Unmarshal(der, &csr); err != nil {
		t.Fatal(err)
	}
	csr.Sig.Bytes = mutate(append([]byte(nil), csr.Sig.Bytes...))
	csr.Sig.BitLength = 8 * len(csr.Sig.Bytes)
	out, err := asn1.Marshal(csr)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestSignRefusesBadRequests checks every kind of bad SignX509SVID request:
// the gRPC code, that the message names the problem, that the refusal is
// counted with its reason and that the ledger did not change.
func TestSignRefusesBadRequests(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MaxRequestBytes = 1 << 20 })
	e.addEntry(t, appID, "node-a")
	other := e.addEntry(t, "spiffe://cluster.local/ns/default/sa/other", "node-b")
	agent := e.agentClient(t, "node-a")
	anon := e.anonClient(t)
	p256 := ecKey(t, elliptic.P256())
	good := workloadCSR(t, p256, appID)

	tests := []struct {
		name   string
		anon   bool
		req    *cav1.SignX509SVIDRequest
		code   codes.Code
		reason string
		msg    string
	}{
		{"malformed CSR", false, &cav1.SignX509SVIDRequest{Csr: []byte("not a csr")}, codes.InvalidArgument, leaf.ReasonMalformedCSR, "not a valid DER"},
		{"empty CSR", false, &cav1.SignX509SVIDRequest{}, codes.InvalidArgument, leaf.ReasonMalformedCSR, "CSR is empty"},
		{"unsigned CSR", false, &cav1.SignX509SVIDRequest{Csr: resign(t, good, func([]byte) []byte { return nil })}, codes.InvalidArgument, leaf.ReasonBadSignature, "signature does not verify"},
		{"bad signature", false, &cav1.SignX509SVIDRequest{Csr: resign(t, good, func(b []byte) []byte { b[len(b)-1] ^= 0xff; return b })}, codes.InvalidArgument, leaf.ReasonBadSignature, "signature does not verify"},
		{"two URI SANs", false, &cav1.SignX509SVIDRequest{Csr: makeCSR(t, p256, csrSpec{uris: []string{appID, appID + "2"}})}, codes.InvalidArgument, leaf.ReasonMultipleSANs, "2 URI SANs"},
		{"DNS SAN", false, &cav1.SignX509SVIDRequest{Csr: makeCSR(t, p256, csrSpec{uris: []string{appID}, dns: []string{"app.example"}})}, codes.InvalidArgument, leaf.ReasonForbiddenSAN, "DNS, IP or e-mail"},
		{"IP SAN", false, &cav1.SignX509SVIDRequest{Csr: makeCSR(t, p256, csrSpec{uris: []string{appID}, ips: []net.IP{net.IPv4(10, 0, 0, 1)}})}, codes.InvalidArgument, leaf.ReasonForbiddenSAN, "DNS, IP or e-mail"},
		{"email SAN", false, &cav1.SignX509SVIDRequest{Csr: makeCSR(t, p256, csrSpec{uris: []string{appID}, emails: []string{"a@example.com"}})}, codes.InvalidArgument, leaf.ReasonForbiddenSAN, "DNS, IP or e-mail"},
		{"other trust domain", false, &cav1.SignX509SVIDRequest{Csr: workloadCSR(t, p256, "spiffe://evil.example/ns/default/sa/app")}, codes.InvalidArgument, leaf.ReasonWrongTrustDomain, "evil.example"},
		{"RSA 1024", false, &cav1.SignX509SVIDRequest{Csr: workloadCSR(t, rsaKey(t, 1024), appID)}, codes.InvalidArgument, leaf.ReasonWeakRSAKey, "1024 bits"},
		{"P-224 curve", false, &cav1.SignX509SVIDRequest{Csr: workloadCSR(t, ecKey(t, elliptic.P224()), appID)}, codes.InvalidArgument, leaf.ReasonUnsupportedKey, "P-224"},
		{"P-521 curve", false, &cav1.SignX509SVIDRequest{Csr: workloadCSR(t, ecKey(t, elliptic.P521()), appID)}, codes.InvalidArgument, leaf.ReasonUnsupportedKey, "P-521"},
		{"TTL above max", false, &cav1.SignX509SVIDRequest{Csr: good, TtlSeconds: 25 * 3600}, codes.InvalidArgument, authority.ReasonTTLTooLong, "exceeds the maximum"},
		{"absurd TTL", false, &cav1.SignX509SVIDRequest{Csr: good, TtlSeconds: 1 << 62}, codes.InvalidArgument, authority.ReasonTTLTooLong, "exceeds the maximum"},
		{"negative TTL", false, &cav1.SignX509SVIDRequest{Csr: good, TtlSeconds: -5}, codes.InvalidArgument, authority.ReasonInvalidTTL, "negative"},
		{"CSR too large", false, &cav1.SignX509SVIDRequest{Csr: make([]byte, issuance.MaxCSRBytes+1)}, codes.InvalidArgument, issuance.ReasonCSRTooLarge, "at most 65536"},
		{"oversized message", false, &cav1.SignX509SVIDRequest{Csr: make([]byte, 3<<19)}, codes.ResourceExhausted, edge.ReasonMessageTooLarge, "larger than max"},
		{"identity of another node", false, &cav1.SignX509SVIDRequest{Csr: workloadCSR(t, p256, "spiffe://cluster.local/ns/default/sa/other")}, codes.PermissionDenied, authz.ReasonNotAssigned, `sa/other to node "node-a"`},
		{"unassigned identity", false, &cav1.SignX509SVIDRequest{Csr: workloadCSR(t, p256, "spiffe://cluster.local/ns/x/sa/y")}, codes.PermissionDenied, authz.ReasonNotAssigned, "no registration entry assigns spiffe://cluster.local/ns/x/sa/y"},
		{"entry of another node", false, &cav1.SignX509SVIDRequest{Csr: good, EntryId: other.Id}, codes.PermissionDenied, authz.ReasonEntryMismatch, "does not assign " + appID},
		{"unknown entry", false, &cav1.SignX509SVIDRequest{Csr: good, EntryId: "nope"}, codes.PermissionDenied, authz.ReasonEntryNotFound, `"nope" does not exist`},
		{"pod UID without k8s", false, &cav1.SignX509SVIDRequest{Csr: good, PodUid: "1234"}, codes.PermissionDenied, authz.ReasonNoPodAuthz, "no Kubernetes pod authorizer"},
		{"no client cert", true, &cav1.SignX509SVIDRequest{Csr: good}, codes.Unauthenticated, authn.ReasonNoClientCert, "no verified client certificate"},
	}
	ctx := context.Background()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client := agent
			if tt.anon {
				client = anon
			}
			size := e.ledger.Size()
			before := e.csrCount(edge.ResultRefused, tt.reason)
			_, err := client.SignX509SVID(ctx, tt.req)
			st := status.Convert(err)
			if st.Code() != tt.code || !strings.Contains(st.Message(), tt.msg) {
				t.Fatalf("got %v %q; want %v containing %q", st.Code(), st.Message(), tt.code, tt.msg)
			}
			if got := e.csrCount(edge.ResultRefused, tt.reason) - before; got != 1 {
				t.Errorf("castellan_csr_total{result=refused,reason=%s} grew by %v, want 1", tt.reason, got)
			}
			if e.ledger.Size() != size {
				t.Errorf("ledger grew from %d to %d on a refused request", size, e.ledger.Size())
			}
		})
	}
	// The same agent still gets its own identity.
	if _, err := agent.SignX509SVID(ctx, &cav1.SignX509SVIDRequest{Csr: good}); err != nil {
		t.Fatalf("good request after refusals: %v", err)
	}
}

// TestAttestRefusesBadTokens covers unknown, reused, expired and malformed
// join tokens and a bad agent CSR.
func TestAttestRefusesBadTokens(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	anon := e.anonClient(t)
	csr := agentCSR(t, ecKey(t, elliptic.P256()))
	used, _, err := e.tokens.Create(ctx, "node-a", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := anon.AttestAgent(ctx, &cav1.AttestAgentRequest{Attestation: &cav1.AttestAgentRequest_JoinToken{JoinToken: used}, Csr: csr}); err != nil {
		t.Fatal(err)
	}
	expired, _, err := e.tokens.Create(ctx, "node-b", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	fresh, _, err := e.tokens.Create(ctx, "node-c", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	e.clock.Add(2 * time.Minute)
	unknown := "cjt_" + strings.Repeat("A", 43)

	tests := []struct {
		name   string
		req    *cav1.AttestAgentRequest
		code   codes.Code
		reason string
		msg    string
	}{
		{"unknown token", joinReq(unknown, csr), codes.Unauthenticated, authn.ReasonJoinTokenUnknown, "is unknown"},
		{"reused token", joinReq(used, csr), codes.Unauthenticated, authn.ReasonJoinTokenUsed, "already used"},
		{"expired token", joinReq(expired, csr), codes.Unauthenticated, authn.ReasonJoinTokenExpired, "expired at"},
		{"malformed token", joinReq("hello", csr), codes.Unauthenticated, authn.ReasonJoinTokenMalformed, "malformed"},
		{"no attestation", &cav1.AttestAgentRequest{Csr: csr}, codes.Unauthenticated, authn.ReasonNoAttestation, "no attestation"},
		{"k8s token without k8s", &cav1.AttestAgentRequest{Attestation: &cav1.AttestAgentRequest_K8SSat{K8SSat: "x"}, Csr: csr}, codes.Unauthenticated, authn.ReasonUnsupported, "not enabled"},
		{"bad CSR keeps the token", joinReq(fresh, []byte("junk")), codes.InvalidArgument, leaf.ReasonMalformedCSR, "not a valid DER"},
		{"weak agent key", joinReq(fresh, agentCSR(t, rsaKey(t, 1024))), codes.InvalidArgument, leaf.ReasonWeakRSAKey, "1024 bits"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			size := e.ledger.Size()
			before := e.csrCount(edge.ResultRefused, tt.reason)
			_, err := anon.AttestAgent(ctx, tt.req)
			st := status.Convert(err)
			if st.Code() != tt.code || !strings.Contains(st.Message(), tt.msg) {
				t.Fatalf("got %v %q; want %v containing %q", st.Code(), st.Message(), tt.code, tt.msg)
			}
			if got := e.csrCount(edge.ResultRefused, tt.reason) - before; got != 1 {
				t.Errorf("castellan_csr_total{result=refused,reason=%s} grew by %v, want 1", tt.reason, got)
			}
			if e.ledger.Size() != size {
				t.Errorf("ledger grew from %d to %d on a refused request", size, e.ledger.Size())
			}
		})
	}
	// A bad CSR did not burn the fresh token.
	if _, err := anon.AttestAgent(ctx, joinReq(fresh, csr)); err != nil {
		t.Fatalf("fresh token after refused CSRs: %v", err)
	}
}

func joinReq(token string, csr []byte) *cav1.AttestAgentRequest {
	return &cav1.AttestAgentRequest{Attestation: &cav1.AttestAgentRequest_JoinToken{JoinToken: token}, Csr: csr}
}

// TestBatchRefusals checks the batch count limit and that per-item
// refusals are counted and kept out of the ledger.
func TestBatchRefusals(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MaxBatch = 4 })
	agent := e.agentClient(t, "node-a")
	ctx := context.Background()
	reqs := make([]*cav1.SignX509SVIDRequest, 5)
	for i := range reqs {
		reqs[i] = &cav1.SignX509SVIDRequest{Csr: []byte("x")}
	}
	size := e.ledger.Size()
	before := e.csrCount(edge.ResultRefused, reasonBatchTooLarge)
	_, err := agent.BatchSignX509SVID(ctx, &cav1.BatchSignX509SVIDRequest{Requests: reqs})
	if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "batch has 5 requests; at most 4") {
		t.Fatalf("got %v %q", st.Code(), st.Message())
	}
	if e.csrCount(edge.ResultRefused, reasonBatchTooLarge)-before != 1 || e.ledger.Size() != size {
		t.Fatal("oversized batch not counted, or ledger changed")
	}
}
