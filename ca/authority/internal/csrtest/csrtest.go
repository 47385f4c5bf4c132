// Package csrtest builds the keys and certificate signing requests the
// tests of ca/authority and its packages sign, and checks what comes back: a
// refusal's reason, code and message, a leaf's extensions and key. It is
// for tests only (internal: nothing outside ca/authority imports it).
package csrtest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"net"
	"net/url"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/castellan-dev/castellan/ca/refusal"
)

// WorkloadID is the SPIFFE ID of WorkloadCSR.
const WorkloadID = "spiffe://example.org/ns/default/sa/workload"

// Spec describes a test CSR: its SANs.
type Spec struct {
	URIs   []string
	DNS    []string
	IPs    []net.IP
	Emails []string
}

// CSR returns a DER CSR with spec's SANs, signed by key.
func CSR(t testing.TB, key crypto.Signer, spec Spec) []byte {
	t.Helper()
	tmpl := &x509.CertificateRequest{DNSNames: spec.DNS, IPAddresses: spec.IPs, EmailAddresses: spec.Emails}
	for _, s := range spec.URIs {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatalf("parse %q: %v", s, err)
		}
		tmpl.URIs = append(tmpl.URIs, u)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatalf("CreateCertificateRequest: %v", err)
	}
	return der
}

// WorkloadCSR returns a workload CSR for WorkloadID signed by key.
func WorkloadCSR(t testing.TB, key crypto.Signer) []byte {
	return CSR(t, key, Spec{URIs: []string{WorkloadID}})
}

// Critical returns whether cert's extension oid is critical, failing t if
// cert has none.
func Critical(t *testing.T, cert *x509.Certificate, oid asn1.ObjectIdentifier) bool {
	t.Helper()
	for _, e := range cert.Extensions {
		if e.Id.Equal(oid) {
			return e.Critical
		}
	}
	t.Fatalf("certificate has no extension %v", oid)
	return false
}

// PublicKeyEqual reports whether a and b are the same public key.
func PublicKeyEqual(a, b crypto.PublicKey) bool {
	e, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && e.Equal(b)
}

// AssertRejected fails t unless err is a refusal (ca/refusal) with reason,
// gRPC code InvalidArgument and a message starting "authority: " that
// contains msg.
func AssertRejected(t *testing.T, err error, reason, msg string) {
	t.Helper()
	var e *refusal.Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not a *refusal.Error", err, err)
	}
	if e.Reason != reason {
		t.Errorf("Reason = %q, want %q (error: %v)", e.Reason, reason, err)
	}
	if refusal.ReasonOf(err) != reason {
		t.Errorf("ReasonOf = %q, want %q", refusal.ReasonOf(err), reason)
	}
	if !strings.HasPrefix(err.Error(), "authority: ") || !strings.Contains(err.Error(), msg) {
		t.Errorf("message %q: want prefix %q and to contain %q", err.Error(), "authority: ", msg)
	}
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.InvalidArgument || st.Message() != err.Error() {
		t.Errorf("status = %v (ok=%v), want InvalidArgument with the error message", st, ok)
	}
}

// WorkloadURIs returns WorkloadID as a CSR's URI SANs.
func WorkloadURIs(t *testing.T) []*url.URL {
	t.Helper()
	u, err := url.Parse(WorkloadID)
	if err != nil {
		t.Fatal(err)
	}
	return []*url.URL{u}
}

// ECKey returns a new ECDSA key on curve c.
func ECKey(t testing.TB, c elliptic.Curve) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(c, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// RSAKey returns a new RSA key of bits bits.
func RSAKey(t testing.TB, bits int) *rsa.PrivateKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		t.Fatal(err)
	}
	return k
}
