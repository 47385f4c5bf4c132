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

// pluginCA is a plug-in CA for trust domain cluster.local written into a
// directory as an operator's cacerts Secret holds one: root.pem (every
// published root; also bundle.pem, for agents' --trust-bundle),
// intermediate.pem and intermediate.key. It can roll its intermediate or
// its root by rewriting the files, as an operator replacing the Secret.
type pluginCA struct {
	t       *testing.T
	dir     string
	serial  int64
	rootKey *ecdsa.PrivateKey
	root    *x509.Certificate
	roots   []byte // PEM of every published root
}

// writeCACerts writes a plug-in CA into dir. A castellan-server keeps its
// own CA in its authority journal, not in files, so replicas sharing a
// store are given one this way.
func writeCACerts(t *testing.T, dir string) *pluginCA {
	t.Helper()
	ca := &pluginCA{t: t, dir: dir}
	ca.newRoot()
	ca.newIntermediate()
	return ca
}

func (ca *pluginCA) template(cn string, life time.Duration) *x509.Certificate {
	td, _ := url.Parse("spiffe://cluster.local")
	ca.serial++
	return &x509.Certificate{SerialNumber: big.NewInt(ca.serial), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(life), URIs: []*url.URL{td},
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		IsCA:     true, BasicConstraintsValid: true}
}

// newRoot makes a new root and publishes it beside the previous ones
// (root.pem); the intermediate is unchanged.
func (ca *pluginCA) newRoot() {
	ca.t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := ca.template("integration root "+time.Now().Format("150405.000"), 10*24*time.Hour)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		ca.t.Fatal(err)
	}
	ca.rootKey = key
	ca.root, _ = x509.ParseCertificate(der)
	ca.roots = append(ca.roots, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	ca.write("root.pem", ca.roots)
	ca.write("bundle.pem", ca.roots)
}

// newIntermediate makes an intermediate under the newest root, writes its
// key then its certificate, and returns it.
func (ca *pluginCA) newIntermediate() *x509.Certificate {
	ca.t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := x509.CreateCertificate(rand.Reader, ca.template("integration intermediate", 5*24*time.Hour), ca.root, key.Public(), ca.rootKey)
	if err != nil {
		ca.t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		ca.t.Fatal(err)
	}
	ca.write("intermediate.key", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}))
	ca.write("intermediate.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	c, _ := x509.ParseCertificate(der)
	return c
}

// write replaces dir/name atomically (a reader never sees half a file).
func (ca *pluginCA) write(name string, data []byte) {
	ca.t.Helper()
	tmp := filepath.Join(ca.dir, "."+name+".tmp")
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		ca.t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(ca.dir, name)); err != nil {
		ca.t.Fatal(err)
	}
}

// flags are castellan-server's plug-in CA flags for the files.
func (ca *pluginCA) flags() []string {
	return []string{"--root-cert", filepath.Join(ca.dir, "root.pem"),
		"--intermediate-cert", filepath.Join(ca.dir, "intermediate.pem"),
		"--intermediate-key", filepath.Join(ca.dir, "intermediate.key")}
}
