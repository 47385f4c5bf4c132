package integration_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// writeCACerts writes a plug-in CA for trust domain cluster.local into dir,
// as an operator's cacerts Secret holds one: root.pem (also bundle.pem,
// for agents' --trust-bundle), intermediate.pem and intermediate.key. A
// castellan-server keeps its own CA in its authority journal, not in
// files, so replicas sharing a store are given one this way.
func writeCACerts(t *testing.T, dir string) {
	t.Helper()
	td, _ := url.Parse("spiffe://cluster.local")
	now := time.Now()
	rootKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	interKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := func(serial int64, cn string, life time.Duration) *x509.Certificate {
		return &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: now.Add(-time.Minute), NotAfter: now.Add(life), URIs: []*url.URL{td},
			KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
			IsCA:     true, BasicConstraintsValid: true}
	}
	rootDER, err := x509.CreateCertificate(rand.Reader, tmpl(1, "integration root", 10*24*time.Hour), tmpl(1, "integration root", 10*24*time.Hour), rootKey.Public(), rootKey)
	if err != nil {
		t.Fatal(err)
	}
	root, _ := x509.ParseCertificate(rootDER)
	interDER, err := x509.CreateCertificate(rand.Reader, tmpl(2, "integration intermediate", 5*24*time.Hour), root, interKey.Public(), rootKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(interKey)
	if err != nil {
		t.Fatal(err)
	}
	rootPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: rootDER})
	for name, data := range map[string][]byte{
		"root.pem": rootPEM, "bundle.pem": rootPEM,
		"intermediate.pem": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: interDER}),
		"intermediate.key": pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}
