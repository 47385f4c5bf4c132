// Package testca is a throwaway certificate authority for the agent's tests:
// it issues X.509-SVIDs shaped as the CA issues them (one URI SAN, CA:false,
// digitalSignature, serverAuth+clientAuth) and the matching trust bundle.
package testca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// CA is a self-signed root that signs SVIDs directly.
type CA struct {
	TrustDomain spiffeid.TrustDomain
	Root        *x509.Certificate
	key         crypto.Signer
}

// New returns a CA for the trust domain td, failing the test on error.
func New(t testing.TB, td string) *CA {
	t.Helper()
	trust, err := spiffeid.TrustDomainFromString(td)
	if err != nil {
		t.Fatalf("testca: %v", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("testca: %v", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(t), Subject: pkix.Name{Organization: []string{"castellan test"}, CommonName: "test root"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		URIs: []*url.URL{trust.ID().URL()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatalf("testca: %v", err)
	}
	root, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("testca: %v", err)
	}
	return &CA{TrustDomain: trust, Root: root, key: key}
}

// SVID issues an SVID for the SPIFFE ID id (a path in the CA's trust domain,
// or a full spiffe:// ID) valid for ttl from now.
func (c *CA) SVID(t testing.TB, id string, ttl time.Duration) *x509svid.SVID {
	t.Helper()
	sid, err := spiffeid.FromString(id)
	if err != nil {
		sid, err = spiffeid.FromPath(c.TrustDomain, "/"+strings.TrimPrefix(id, "/"))
	}
	if err != nil {
		t.Fatalf("testca: %v", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("testca: %v", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(t), NotBefore: time.Now().Add(-30 * time.Second), NotAfter: time.Now().Add(ttl),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:        []*url.URL{sid.URL()}, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.Root, key.Public(), c.key)
	if err != nil {
		t.Fatalf("testca: %v", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("testca: %v", err)
	}
	return &x509svid.SVID{ID: sid, Certificates: []*x509.Certificate{leaf}, PrivateKey: key}
}

// Bundle returns the trust bundle holding the root.
func (c *CA) Bundle() *x509bundle.Bundle {
	return x509bundle.FromX509Authorities(c.TrustDomain, []*x509.Certificate{c.Root})
}

func serial(t testing.TB) *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		t.Fatalf("testca: %v", err)
	}
	return n
}
