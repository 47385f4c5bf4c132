package chaincheck

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"math/big"
	"net/url"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

var (
	td    = spiffeid.RequireTrustDomainFromString("cluster.local")
	other = spiffeid.RequireTrustDomainFromString("other.example")
	// base is the time every test certificate's validity is counted from
	// (whole seconds, as X.509 encodes them), long past: a zero time,
	// which means the wall clock, finds them all expired.
	base = time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)
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

// newV1Intermediate is an intermediate named cn under parent in an X.509
// version 1 certificate (no extensions, so no basic constraints), which
// crypto/x509 can read but not write: CheckSignatureFrom accepts a v1
// parent, chain building does not.
func newV1Intermediate(t testing.TB, parent *authority, cn string) *authority {
	t.Helper()
	key := newKey(t)
	spki, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	subject, err := asn1.Marshal(pkix.Name{CommonName: cn}.ToRDNSequence())
	if err != nil {
		t.Fatal(err)
	}
	sigAlg := func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { b.AddASN1ObjectIdentifier(oidECDSAWithSHA256) })
	}
	var tbs cryptobyte.Builder
	tbs.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1Int64(7)
		sigAlg(b)
		b.AddBytes(parent.cert.RawSubject)
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1UTCTime(base.Add(-time.Hour))
			b.AddASN1UTCTime(base.Add(12 * time.Hour))
		})
		b.AddBytes(subject)
		b.AddBytes(spki)
	})
	tbsDER := tbs.BytesOrPanic()
	digest := sha256.Sum256(tbsDER)
	sig, err := parent.key.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	var cert cryptobyte.Builder
	cert.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddBytes(tbsDER)
		sigAlg(b)
		b.AddASN1BitString(sig)
	})
	c, err := x509.ParseCertificate(cert.BytesOrPanic())
	if err != nil {
		t.Fatal(err)
	}
	if c.Version != 1 || c.BasicConstraintsValid || c.CheckSignatureFrom(parent.cert) != nil {
		t.Fatalf("v1 intermediate: version %d, basic constraints %v, signature %v", c.Version, c.BasicConstraintsValid, c.CheckSignatureFrom(parent.cert))
	}
	return &authority{cert: c, key: key}
}

var oidECDSAWithSHA256 = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}
