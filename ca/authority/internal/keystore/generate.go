package keystore

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"net/url"
	"time"

	"github.com/castellan-dev/castellan/ca/authority/leaf"
	"github.com/castellan-dev/castellan/ca/lifetime"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Subject names of generated CA certificates.
const (
	organization           = "Castellan"
	rootCommonName         = "Castellan Root CA"
	intermediateCommonName = "Castellan Intermediate CA"
)

// Generate creates a fresh root and intermediate, both ECDSA P-256; the
// CA holds the root key too (to persist or seal it, or to issue another
// intermediate).
func Generate(cfg Config) (*CA, error) {
	rootKey, root, err := newRoot(cfg.TrustDomain, cfg.Clock.Now(), cfg.RootTTL)
	if err != nil {
		return nil, err
	}
	return withIntermediate(cfg, root, rootKey)
}

// withIntermediate issues a new intermediate under root.
func withIntermediate(cfg Config, root *x509.Certificate, rootKey crypto.Signer) (*CA, error) {
	key, cert, err := newIntermediate(cfg.TrustDomain, cfg.Clock.Now(), cfg.IntermediateTTL, root, rootKey)
	if err != nil {
		return nil, err
	}
	return &CA{
		Cert:    cert,
		key:     key,
		Chain:   []*x509.Certificate{cert},
		Root:    root,
		Roots:   []*x509.Certificate{root},
		rootKey: rootKey,
	}, nil
}

// newRoot creates a self-signed root: CA:true, keyCertSign and cRLSign,
// URI SAN spiffe://<td>, valid from now-Backdate for ttl.
func newRoot(td spiffeid.TrustDomain, now time.Time, ttl time.Duration) (crypto.Signer, *x509.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("authority: generate root key: %w", err)
	}
	tmpl, err := caTemplate(td, rootCommonName, now, now.Add(ttl))
	if err != nil {
		return nil, nil, err
	}
	cert, err := createCert(tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, fmt.Errorf("authority: self-sign root: %w", err)
	}
	return key, cert, nil
}

// newIntermediate creates an intermediate signed by root: CA:true with
// pathlen 0, URI SAN spiffe://<td>, valid for ttl but never past the root.
func newIntermediate(td spiffeid.TrustDomain, now time.Time, ttl time.Duration, root *x509.Certificate, rootKey crypto.Signer) (crypto.Signer, *x509.Certificate, error) {
	if !now.Before(root.NotAfter) {
		return nil, nil, fmt.Errorf("authority: root CA expired at %s; replace the root", root.NotAfter.UTC().Format(time.RFC3339))
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("authority: generate intermediate key: %w", err)
	}
	tmpl, err := caTemplate(td, intermediateCommonName, now, lifetime.NotAfter(now, ttl, root.NotAfter))
	if err != nil {
		return nil, nil, err
	}
	tmpl.MaxPathLen, tmpl.MaxPathLenZero = 0, true
	if tmpl.NotBefore.Before(root.NotBefore) {
		tmpl.NotBefore = root.NotBefore
	}
	cert, err := createCert(tmpl, root, key.Public(), rootKey)
	if err != nil {
		return nil, nil, fmt.Errorf("authority: sign intermediate: %w", err)
	}
	return key, cert, nil
}

func caTemplate(td spiffeid.TrustDomain, cn string, now, notAfter time.Time) (*x509.Certificate, error) {
	serial, err := leaf.NewSerial()
	if err != nil {
		return nil, err
	}
	return &x509.Certificate{
		SerialNumber: serial,
		Subject: pkix.Name{
			Organization:       []string{organization},
			OrganizationalUnit: []string{td.Name()},
			CommonName:         cn,
		},
		NotBefore:             now.Add(-leaf.Backdate),
		NotAfter:              notAfter,
		URIs:                  []*url.URL{td.ID().URL()},
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            -1,
	}, nil
}

// createCert signs tmpl and parses the result. Go fills in SubjectKeyId for
// CA templates and AuthorityKeyId from the parent's SubjectKeyId.
func createCert(tmpl, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) (*x509.Certificate, error) {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}
