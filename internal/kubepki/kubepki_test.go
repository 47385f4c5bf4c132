package kubepki

import (
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"testing"
	"time"
)

// TestIssuedCredentialsChainAndMatch: a serving and a client credential
// verify against the CA for their own usage only, their keys match their
// certificates, and every file is private.
func TestIssuedCredentialsChainAndMatch(t *testing.T) {
	dir := t.TempDir()
	ca, err := NewCA(dir, "test-ca", 2*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ca.Serving("srv", "kube-apiserver", []string{"kubernetes"}, []net.IP{net.ParseIP("127.0.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	cli, err := ca.Client("admin", "alice", "system:masters")
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	for _, tc := range []struct {
		cred  *Credential
		usage x509.ExtKeyUsage
		other x509.ExtKeyUsage
		name  string
	}{
		{srv, x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth, "kubernetes"},
		{cli, x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth, ""},
	} {
		pair, err := tls.X509KeyPair(tc.cred.CertPEM, tc.cred.KeyPEM)
		if err != nil {
			t.Fatalf("%s: key does not match certificate: %v", tc.cred.CertFile, err)
		}
		leaf, err := x509.ParseCertificate(pair.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: tc.name, KeyUsages: []x509.ExtKeyUsage{tc.usage}}); err != nil {
			t.Fatalf("%s does not verify: %v", tc.cred.CertFile, err)
		}
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{tc.other}}); err == nil {
			t.Fatalf("%s verifies for a usage it was not issued for", tc.cred.CertFile)
		}
		if !leaf.NotAfter.Before(ca.Cert.NotAfter) {
			t.Fatalf("%s outlives its CA", tc.cred.CertFile)
		}
	}
	if cli.CertPEM == nil || len(mustLeaf(t, cli).Subject.Organization) != 1 || mustLeaf(t, cli).Subject.Organization[0] != "system:masters" {
		t.Fatal("client certificate lost its group")
	}
	for _, f := range []string{ca.File, srv.CertFile, srv.KeyFile, cli.CertFile, cli.KeyFile} {
		assertPrivate(t, f)
	}
}

// TestServiceAccountKeysPair: the written private and public keys are one
// RSA pair in the formats the apiserver reads.
func TestServiceAccountKeysPair(t *testing.T) {
	dir := t.TempDir()
	k, err := WriteServiceAccountKeys(dir)
	if err != nil {
		t.Fatal(err)
	}
	privPEM, _ := os.ReadFile(k.KeyFile)
	pubPEM, _ := os.ReadFile(k.PubFile)
	pb, _ := pem.Decode(privPEM)
	ub, _ := pem.Decode(pubPEM)
	if pb == nil || ub == nil || pb.Type != "PRIVATE KEY" || ub.Type != "PUBLIC KEY" {
		t.Fatalf("unexpected PEM: %q / %q", privPEM, pubPEM)
	}
	priv, err := x509.ParsePKCS8PrivateKey(pb.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.ParsePKIXPublicKey(ub.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	rsaKey, ok := priv.(*rsa.PrivateKey)
	if !ok || rsaKey.N.BitLen() != 2048 {
		t.Fatalf("sa.key is %T, want RSA-2048", priv)
	}
	if !rsaKey.PublicKey.Equal(pub) {
		t.Fatal("sa.pub is not the public half of sa.key")
	}
	assertPrivate(t, k.KeyFile)
}

func mustLeaf(t *testing.T, c *Credential) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode(c.CertPEM)
	cert, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func assertPrivate(t *testing.T, name string) {
	t.Helper()
	fi, err := os.Stat(name)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("%s has mode %v, want 0600", name, fi.Mode().Perm())
	}
}
