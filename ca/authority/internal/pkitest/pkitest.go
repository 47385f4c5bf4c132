// Package pkitest builds the throwaway CA material the tests of
// ca/authority and its packages plug in and compare against: keys, roots
// and intermediates shaped as the key store generates them, and their PEM
// files. It is for tests only (internal: nothing outside ca/authority
// imports it); the CA's own keys never pass through it.
package pkitest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/ca/authority/leaf"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// IntermediateCommonName is the common name of a generated intermediate.
const IntermediateCommonName = "Castellan Intermediate CA"

// NewRoot returns a self-signed P-256 root valid from now-Backdate for ttl.
func NewRoot(td spiffeid.TrustDomain, now time.Time, ttl time.Duration) (crypto.Signer, *x509.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl, err := CATemplate(td, "Castellan Root CA", now, now.Add(ttl))
	if err != nil {
		return nil, nil, err
	}
	cert, err := CreateCert(tmpl, tmpl, key.Public(), key)
	return key, cert, err
}

// NewIntermediate returns a P-256 intermediate under root, pathlen 0,
// valid for ttl but never past the root.
func NewIntermediate(td spiffeid.TrustDomain, now time.Time, ttl time.Duration, root *x509.Certificate, rootKey crypto.Signer) (crypto.Signer, *x509.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	notAfter := now.Add(ttl)
	if notAfter.After(root.NotAfter) {
		notAfter = root.NotAfter
	}
	tmpl, err := CATemplate(td, IntermediateCommonName, now, notAfter)
	if err != nil {
		return nil, nil, err
	}
	tmpl.MaxPathLen, tmpl.MaxPathLenZero = 0, true
	if tmpl.NotBefore.Before(root.NotBefore) {
		tmpl.NotBefore = root.NotBefore
	}
	cert, err := CreateCert(tmpl, root, key.Public(), rootKey)
	return key, cert, err
}

// CATemplate returns the template of a CA certificate as the key store
// generates one: P-256, O=Castellan, OU=the trust domain, the trust
// domain's URI SAN, valid from now minus leaf.Backdate.
func CATemplate(td spiffeid.TrustDomain, cn string, now, notAfter time.Time) (*x509.Certificate, error) {
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

// CreateCert signs tmpl and parses the result.
func CreateCert(tmpl, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) (*x509.Certificate, error) {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

// PoolOf returns a pool of certs.
func PoolOf(certs []*x509.Certificate) *x509.CertPool {
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	return pool
}

// WritePEM writes certs as PEM to dir/name (0600) and returns the path.
func WritePEM(t testing.TB, dir, name string, certs ...*x509.Certificate) string {
	t.Helper()
	var data []byte
	for _, c := range certs {
		data = append(data, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// WriteKey writes key as PKCS #8 PEM to dir/name (0600) and returns the path.
func WriteKey(t testing.TB, dir, name string, key crypto.Signer) string {
	t.Helper()
	data, err := EncodeKey(key)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// EncodeKey returns key as a PKCS #8 PEM block.
func EncodeKey(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}
