package leaf

import (
	"crypto"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"math/big"
	"net/url"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/ca/authority/internal/csrtest"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

var testTD = spiffeid.RequireTrustDomainFromString("example.org")

// testCA is an issuer of the encoder's tests: an intermediate, its key and
// the root it chains to.
type testCA struct {
	cert, root *x509.Certificate
	key        crypto.Signer
}

// newTestCA issues an intermediate over key under a fresh P-256 root: the
// subject (rawSubject, when set, is copied verbatim), validity and SPIFFE
// URI SAN (when set) as given, CA:true with pathlen 0.
func newTestCA(t testing.TB, key crypto.Signer, subject pkix.Name, rawSubject []byte, uri *url.URL, notBefore, notAfter time.Time) *testCA {
	t.Helper()
	rootKey := csrtest.ECKey(t, elliptic.P256())
	rootTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "root " + subject.CommonName},
		NotBefore: notBefore.Add(-time.Hour), NotAfter: notAfter,
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
	}
	root := createCert(t, rootTmpl, rootTmpl, rootKey.Public(), rootKey)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: subject, RawSubject: rawSubject,
		NotBefore: notBefore, NotAfter: notAfter,
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true, MaxPathLen: 0, MaxPathLenZero: true,
	}
	if uri != nil {
		tmpl.URIs = []*url.URL{uri}
	}
	return &testCA{cert: createCert(t, tmpl, root, key.Public(), rootKey), root: root, key: key}
}

// castellanCA is an intermediate shaped as the CA generates one (P-256,
// O=Castellan, OU=trust domain, URI SAN of the trust domain), valid from
// now minus Backdate for a year.
func castellanCA(t testing.TB, now time.Time) *testCA {
	return newTestCA(t, csrtest.ECKey(t, elliptic.P256()),
		pkix.Name{Organization: []string{"Castellan"}, OrganizationalUnit: []string{testTD.Name()}, CommonName: "Castellan Intermediate CA"},
		nil, testTD.ID().URL(), now.Add(-Backdate), now.Add(365*24*time.Hour))
}

func createCert(t testing.TB, tmpl, parent *x509.Certificate, pub crypto.PublicKey, key crypto.Signer) *x509.Certificate {
	t.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// template builds the leaf template Sign builds under ca at now with the
// CA's default policy.
func (ca *testCA) template(t testing.TB, now time.Time, profile string, csr *CSR, id spiffeid.ID, ttl time.Duration) *x509.Certificate {
	t.Helper()
	policy, err := NewPolicy(time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	tmpl, err := Template(policy, ca.cert, now, profile, csr, id, ttl)
	if err != nil {
		t.Fatalf("Template(now %v): %v", now, err)
	}
	return &tmpl
}

// Extensions the tests look for.
var (
	oidBasicConstraints = asn1.ObjectIdentifier{2, 5, 29, 19}
	oidKeyUsage         = asn1.ObjectIdentifier{2, 5, 29, 15}
	oidSubjectAltName   = asn1.ObjectIdentifier{2, 5, 29, 17}
)
