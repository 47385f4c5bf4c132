package chaincheck

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"math/big"
	"net/url"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

var (
	td    = spiffeid.RequireTrustDomainFromString("cluster.local")
	other = spiffeid.RequireTrustDomainFromString("other.example")
	// base is the time every test certificate's validity is counted from
	// (whole seconds, as X.509 encodes them).
	base = time.Date(2026, 11, 29, 8, 0, 0, 0, time.UTC)
)

// authority is a CA certificate with its key.
type authority struct {
	cert *x509.Certificate
	key  crypto.Signer
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// create signs tmpl for pub by parent (self-signed when parent is nil,
// with key).
func create(t testing.TB, tmpl *x509.Certificate, pub crypto.PublicKey, parent *authority, key crypto.Signer) *x509.Certificate {
	t.Helper()
	issuer, signer := tmpl, key
	if parent != nil {
		issuer, signer = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, pub, signer)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

var serials int64

// caTemplate is a CA certificate named cn, valid from base-1h to
// base+lifetime.
func caTemplate(cn string, lifetime time.Duration) *x509.Certificate {
	serials++
	return &x509.Certificate{
		SerialNumber: big.NewInt(serials), Subject: pkix.Name{CommonName: cn, Organization: []string{"chaincheck test"}},
		NotBefore: base.Add(-time.Hour), NotAfter: base.Add(lifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true, IsCA: true, MaxPathLen: -1,
	}
}

// newRoot is a self-signed root; change, if not nil, edits its template.
func newRoot(t testing.TB, cn string, change func(*x509.Certificate)) *authority {
	t.Helper()
	tmpl := caTemplate(cn, 24*time.Hour)
	if change != nil {
		change(tmpl)
	}
	key := newKey(t)
	return &authority{cert: create(t, tmpl, key.Public(), nil, key), key: key}
}

// newIntermediate is an intermediate named cn under parent.
func newIntermediate(t testing.TB, parent *authority, cn string, change func(*x509.Certificate)) *authority {
	t.Helper()
	tmpl := caTemplate(cn, 12*time.Hour)
	if change != nil {
		change(tmpl)
	}
	key := newKey(t)
	return &authority{cert: create(t, tmpl, key.Public(), parent, nil), key: key}
}

// leafTemplate is a workload SVID for path in td, valid from base-1m to
// base+1h.
func leafTemplate(id spiffeid.ID) *x509.Certificate {
	serials++
	return &x509.Certificate{
		SerialNumber: big.NewInt(serials), NotBefore: base.Add(-time.Minute), NotAfter: base.Add(time.Hour),
		URIs:                  []*url.URL{id.URL()},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment | x509.KeyUsageKeyAgreement,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
}

// newLeaf is a workload SVID for /w under parent; change edits its
// template.
func newLeaf(t testing.TB, parent *authority, change func(*x509.Certificate)) *x509.Certificate {
	t.Helper()
	tmpl := leafTemplate(spiffeid.RequireFromPath(td, "/w"))
	if change != nil {
		change(tmpl)
	}
	return create(t, tmpl, newKey(t).Public(), parent, nil)
}

func bundleOf(roots ...*authority) *x509bundle.Bundle {
	b := x509bundle.New(td)
	for _, r := range roots {
		b.AddX509Authority(r.cert)
	}
	return b
}

// criticalExt is an extension crypto/x509 does not handle, marked
// critical.
var criticalExt = pkix.Extension{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 1}, Critical: true, Value: []byte{5, 0}}
