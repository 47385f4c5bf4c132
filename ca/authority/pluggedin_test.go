package authority

import (
	"context"
	"crypto"
	"crypto/elliptic"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/ca/authority/internal/csrtest"
	"github.com/castellan-dev/castellan/ca/authority/internal/pkitest"
	"github.com/castellan-dev/castellan/internal/clock/clocktest"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// testPKI is an operator-supplied CA written to PEM files.
type testPKI struct {
	root, otherRoot, inter *x509.Certificate
	rootKey, interKey      crypto.Signer
}

func newTestPKI(t *testing.T, now time.Time) *testPKI {
	t.Helper()
	rootKey, root, err := pkitest.NewRoot(testTD, now, 10*DefaultIntermediateTTL)
	if err != nil {
		t.Fatal(err)
	}
	_, other, err := pkitest.NewRoot(testTD, now, 10*DefaultIntermediateTTL)
	if err != nil {
		t.Fatal(err)
	}
	interKey, inter, err := pkitest.NewIntermediate(testTD, now, DefaultIntermediateTTL, root, rootKey)
	if err != nil {
		t.Fatal(err)
	}
	return &testPKI{root: root, otherRoot: other, inter: inter, rootKey: rootKey, interKey: interKey}
}

func TestPluggedInCASignsSVIDsThatVerifyAgainstItsRoots(t *testing.T) {
	clock := newTestClock()
	pki := newTestPKI(t, clock.now)
	dir := t.TempDir()
	a, err := New(Config{
		TrustDomain:          testTD,
		RootCertFile:         pkitest.WritePEM(t, dir, "roots.pem", pki.otherRoot, pki.root),
		IntermediateCertFile: pkitest.WritePEM(t, dir, "ca-cert.pem", pki.inter),
		IntermediateKeyFile:  pkitest.WriteKey(t, dir, "ca-key.pem", pki.interKey),
		Clock:                clocktest.Func(clock.Now),
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if !a.Root().Equal(pki.root) || !a.Intermediate().Equal(pki.inter) {
		t.Error("Root/Intermediate are not the plugged-in certificates")
	}
	if got := a.Bundle().X509Authorities(); len(got) != 2 {
		t.Errorf("bundle has %d roots, want both from the file", len(got))
	}
	csr, err := a.ParseWorkloadCSR(csrtest.WorkloadCSR(t, csrtest.ECKey(t, elliptic.P256())))
	if err != nil {
		t.Fatal(err)
	}
	iss, err := a.Sign(context.Background(), csr, csr.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := x509svid.Verify(iss.Chain, a.Bundle(), x509svid.WithTime(clock.now)); err != nil {
		t.Fatalf("leaf does not verify against the plugged-in bundle: %v", err)
	}
	if len(iss.Chain) != 2 {
		t.Errorf("chain has %d certificates, want leaf + intermediate", len(iss.Chain))
	}
}

func TestPluggedInCAWithChainFileAndRSAKey(t *testing.T) {
	clock := newTestClock()
	pki := newTestPKI(t, clock.now)
	// root -> mid (EC) -> issuing (RSA 2048); the intermediate file is a cert-chain.pem.
	midKey := csrtest.ECKey(t, elliptic.P256())
	tmpl, err := pkitest.CATemplate(testTD, "mid", clock.now, clock.now.Add(DefaultIntermediateTTL))
	if err != nil {
		t.Fatal(err)
	}
	tmpl.MaxPathLen = 1
	mid, err := pkitest.CreateCert(tmpl, pki.root, midKey.Public(), pki.rootKey)
	if err != nil {
		t.Fatal(err)
	}
	rsaIssuing := csrtest.RSAKey(t, 2048)
	tmpl, err = pkitest.CATemplate(testTD, "issuing", clock.now, clock.now.Add(DefaultIntermediateTTL))
	if err != nil {
		t.Fatal(err)
	}
	tmpl.MaxPathLen, tmpl.MaxPathLenZero = 0, true
	issuing, err := pkitest.CreateCert(tmpl, mid, rsaIssuing.Public(), midKey)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	a, err := New(Config{
		TrustDomain:          testTD,
		RootCertFile:         pkitest.WritePEM(t, dir, "root-cert.pem", pki.root),
		IntermediateCertFile: pkitest.WritePEM(t, dir, "cert-chain.pem", issuing, mid, pki.root),
		IntermediateKeyFile:  pkitest.WriteKey(t, dir, "ca-key.pem", rsaIssuing),
		Clock:                clocktest.Func(clock.Now),
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	csr, err := a.ParseWorkloadCSR(csrtest.WorkloadCSR(t, csrtest.ECKey(t, elliptic.P256())))
	if err != nil {
		t.Fatal(err)
	}
	iss, err := a.Sign(context.Background(), csr, csr.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(iss.Chain) != 3 || !iss.Chain[1].Equal(issuing) || !iss.Chain[2].Equal(mid) {
		t.Fatalf("chain = %d certs, want leaf, issuing, mid (root excluded)", len(iss.Chain))
	}
	if _, _, err := x509svid.Verify(iss.Chain, a.Bundle(), x509svid.WithTime(clock.now)); err != nil {
		t.Fatalf("leaf does not verify: %v", err)
	}
}

func TestPluggedInCARejectsBadMaterial(t *testing.T) {
	clock := newTestClock()
	pki := newTestPKI(t, clock.now)
	otherTD := spiffeid.RequireTrustDomainFromString("other.org")
	foreignKey, foreignInter, err := pkitest.NewIntermediate(otherTD, clock.now, DefaultIntermediateTTL, pki.root, pki.rootKey)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	roots := pkitest.WritePEM(t, dir, "roots.pem", pki.root)
	inter := pkitest.WritePEM(t, dir, "inter.pem", pki.inter)
	key := pkitest.WriteKey(t, dir, "inter.key", pki.interKey)
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name              string
		roots, inter, key string
		now               time.Time
		want              string
	}{
		{"intermediate not signed by given root", pkitest.WritePEM(t, dir, "other.pem", pki.otherRoot), inter, key, clock.now, "does not chain to a root"},
		{"key does not match certificate", roots, inter, pkitest.WriteKey(t, dir, "wrong.key", csrtest.ECKey(t, elliptic.P256())), clock.now, "does not match the certificate"},
		{"leaf as intermediate", roots, pkitest.WritePEM(t, dir, "leaf.pem", leafOf(t, pki)), key, clock.now, "not a CA certificate"},
		{"root file holds a leaf", pkitest.WritePEM(t, dir, "leafroot.pem", leafOf(t, pki)), inter, key, clock.now, "not a CA certificate"},
		{"expired intermediate", roots, inter, key, pki.inter.NotAfter.Add(time.Hour), "expired"},
		{"intermediate of another trust domain", roots, pkitest.WritePEM(t, dir, "foreign.pem", foreignInter), pkitest.WriteKey(t, dir, "foreign.key", foreignKey), clock.now, "other.org"},
		{"no certificate in root file", garbage, inter, key, clock.now, "no PEM CERTIFICATE"},
		{"no key in key file", roots, inter, garbage, clock.now, "no PEM private key"},
		{"missing file", filepath.Join(dir, "absent.pem"), inter, key, clock.now, "absent.pem"},
		{"weak CA key", roots, inter, pkitest.WriteKey(t, dir, "p224.key", csrtest.ECKey(t, elliptic.P224())), clock.now, "P-224"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			now := tt.now
			_, err := New(Config{TrustDomain: testTD, RootCertFile: tt.roots, IntermediateCertFile: tt.inter,
				IntermediateKeyFile: tt.key, Clock: clocktest.Func(func() time.Time { return now })})
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "authority: ") {
				t.Fatalf("New error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

// leafOf returns an X.509-SVID signed by the PKI's intermediate.
func leafOf(t *testing.T, pki *testPKI) *x509.Certificate {
	t.Helper()
	dir := t.TempDir()
	a, err := New(Config{
		TrustDomain:          testTD,
		RootCertFile:         pkitest.WritePEM(t, dir, "root.pem", pki.root),
		IntermediateCertFile: pkitest.WritePEM(t, dir, "inter.pem", pki.inter),
		IntermediateKeyFile:  pkitest.WriteKey(t, dir, "inter.key", pki.interKey),
		Clock:                clocktest.Func(newTestClock().Now),
		Logger:               discardLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	csr, err := a.ParseWorkloadCSR(csrtest.WorkloadCSR(t, csrtest.ECKey(t, elliptic.P256())))
	if err != nil {
		t.Fatal(err)
	}
	iss, err := a.Sign(context.Background(), csr, csr.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	return iss.Chain[0]
}
