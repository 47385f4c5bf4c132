package authority

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/url"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/castellan-dev/castellan/ca/authority/leaf"
)

// The tests build CA material of their own (the key store never hands a
// key out): certificates shaped as the key store generates them.

const intermediateCommonName = "Castellan Intermediate CA"

// newRoot returns a self-signed P-256 root valid from now-Backdate for ttl.
func newRoot(td spiffeid.TrustDomain, now time.Time, ttl time.Duration) (crypto.Signer, *x509.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl, err := caTemplate(td, "Castellan Root CA", now, now.Add(ttl))
	if err != nil {
		return nil, nil, err
	}
	cert, err := createCert(tmpl, tmpl, key.Public(), key)
	return key, cert, err
}

// newIntermediate returns a P-256 intermediate under root, pathlen 0,
// valid for ttl but never past the root.
func newIntermediate(td spiffeid.TrustDomain, now time.Time, ttl time.Duration, root *x509.Certificate, rootKey crypto.Signer) (crypto.Signer, *x509.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	notAfter := now.Add(ttl)
	if notAfter.After(root.NotAfter) {
		notAfter = root.NotAfter
	}
	tmpl, err := caTemplate(td, intermediateCommonName, now, notAfter)
	if err != nil {
		return nil, nil, err
	}
	tmpl.MaxPathLen, tmpl.MaxPathLenZero = 0, true
	if tmpl.NotBefore.Before(root.NotBefore) {
		tmpl.NotBefore = root.NotBefore
	}
	cert, err := createCert(tmpl, root, key.Public(), rootKey)
	return key, cert, err
}

func caTemplate(td spiffeid.TrustDomain, cn string, now, notAfter time.Time) (*x509.Certificate, error) {
	serial, err := leaf.NewSerial()
	if err != nil {
		return nil, err
	}
	return &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{Organization: []string{"Castellan"}, OrganizationalUnit: []string{td.Name()}, CommonName: cn},
		NotBefore:    now.Add(-leaf.Backdate), NotAfter: notAfter,
		URIs:                  []*url.URL{td.ID().URL()},
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true, IsCA: true, MaxPathLen: -1,
	}, nil
}

func createCert(tmpl, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) (*x509.Certificate, error) {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

func poolOf(certs []*x509.Certificate) *x509.CertPool {
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	return pool
}

// signsAs fails t unless a signs with the private key of cert: a CRL it
// signs verifies under cert.
func signsAs(t testing.TB, a *Authority, cert *x509.Certificate) {
	t.Helper()
	der, err := a.SignCRL(&x509.RevocationList{Number: big.NewInt(1), ThisUpdate: a.clock(), NextUpdate: a.clock().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatal(err)
	}
	if err := crl.CheckSignatureFrom(cert); err != nil {
		t.Fatalf("the CA does not sign with the key of %s: %v", cert.Subject, err)
	}
}

// benchCA returns a P-256 intermediate and its key, and the CA's signing
// policy, for benchmarks of other signers.
func benchCA(b *testing.B) (*x509.Certificate, crypto.Signer) {
	now := time.Now()
	rootKey, root, err := newRoot(testTD, now, DefaultRootTTL)
	if err != nil {
		b.Fatal(err)
	}
	key, inter, err := newIntermediate(testTD, now, DefaultIntermediateTTL, root, rootKey)
	if err != nil {
		b.Fatal(err)
	}
	return inter, key
}

// encodeKey returns key as a PKCS #8 PEM block.
func encodeKey(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}
