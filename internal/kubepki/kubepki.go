// Package kubepki makes the key material of a test Kubernetes control plane:
// one P-256 CA that signs every serving and client certificate, and the RSA
// key pair that signs service-account tokens (RS256, as kubeadm and managed
// clusters do). Both the apiserver-only test environment
// (integration/kubetest) and the real single-node cluster
// (integration/cluster) use it. Everything is written as PEM files, mode
// 0600, into one directory.
package kubepki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// CA is a certificate authority whose files live in Dir.
type CA struct {
	Dir  string            // where every file is written
	Cert *x509.Certificate // the CA certificate
	PEM  []byte            // Cert as PEM
	File string            // Dir/ca.crt, holding PEM
	key  *ecdsa.PrivateKey
}

// Credential is a certificate and its private key, as files and as PEM.
type Credential struct {
	CertFile, KeyFile string
	CertPEM, KeyPEM   []byte
}

// NewCA creates dir (0700) and a self-signed CA named cn valid for ttl
// (backdated an hour), written to dir/ca.crt.
func NewCA(dir, cn string, ttl time.Duration) (*CA, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("kubepki: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("kubepki: CA key: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(ttl),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("kubepki: self-sign %s: %w", cn, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("kubepki: %w", err)
	}
	ca := &CA{Dir: dir, Cert: cert, key: key, File: filepath.Join(dir, "ca.crt"),
		PEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
	if err := os.WriteFile(ca.File, ca.PEM, 0o600); err != nil {
		return nil, fmt.Errorf("kubepki: %w", err)
	}
	return ca, nil
}

// Client issues a client certificate for user cn in groups (the
// certificate's organizations), written as name.crt and name.key.
func (ca *CA) Client(name, cn string, groups ...string) (*Credential, error) {
	return ca.Issue(name, &x509.Certificate{
		Subject:     pkix.Name{CommonName: cn, Organization: groups},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
}

// Serving issues a serving certificate named cn for dnsNames and ips,
// written as name.crt and name.key.
func (ca *CA) Serving(name, cn string, dnsNames []string, ips []net.IP) (*Credential, error) {
	return ca.Issue(name, &x509.Certificate{
		Subject:     pkix.Name{CommonName: cn},
		DNSNames:    dnsNames,
		IPAddresses: ips,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
}

// Issue signs tmpl for a fresh P-256 key, valid from an hour ago until an
// hour before the CA expires, and writes name.crt and name.key (PKCS #8).
// It sets tmpl's serial, validity and key usage.
func (ca *CA) Issue(name string, tmpl *x509.Certificate) (*Credential, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("kubepki: key for %s: %w", name, err)
	}
	tmpl.SerialNumber = serial()
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = ca.Cert.NotAfter.Add(-time.Hour)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.key)
	if err != nil {
		return nil, fmt.Errorf("kubepki: signing %s: %w", name, err)
	}
	keyPEM, err := privatePEM(key)
	if err != nil {
		return nil, err
	}
	c := &Credential{
		CertFile: filepath.Join(ca.Dir, name+".crt"),
		KeyFile:  filepath.Join(ca.Dir, name+".key"),
		CertPEM:  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:   keyPEM,
	}
	if err := writeFiles(map[string][]byte{c.CertFile: c.CertPEM, c.KeyFile: c.KeyPEM}); err != nil {
		return nil, err
	}
	return c, nil
}

// ServiceAccountKeys are the files of the token-signing key pair.
type ServiceAccountKeys struct {
	KeyFile string // the private key (PKCS #8): --service-account-signing-key-file
	PubFile string // the public key (PKIX): --service-account-key-file
}

// WriteServiceAccountKeys writes a fresh RSA-2048 token-signing key pair as
// dir/sa.key and dir/sa.pub.
func WriteServiceAccountKeys(dir string) (ServiceAccountKeys, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return ServiceAccountKeys{}, fmt.Errorf("kubepki: service-account key: %w", err)
	}
	priv, err := privatePEM(key)
	if err != nil {
		return ServiceAccountKeys{}, err
	}
	pub, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return ServiceAccountKeys{}, fmt.Errorf("kubepki: %w", err)
	}
	k := ServiceAccountKeys{KeyFile: filepath.Join(dir, "sa.key"), PubFile: filepath.Join(dir, "sa.pub")}
	return k, writeFiles(map[string][]byte{
		k.KeyFile: priv,
		k.PubFile: pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}),
	})
}

func privatePEM(key any) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("kubepki: marshal private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func writeFiles(files map[string][]byte) error {
	for name, data := range files {
		if err := os.WriteFile(name, data, 0o600); err != nil {
			return fmt.Errorf("kubepki: %w", err)
		}
	}
	return nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	if err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return n
}
