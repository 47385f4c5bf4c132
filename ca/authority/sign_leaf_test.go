package authority

import (
	"bytes"
	"context"
	"crypto"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/castellan-dev/castellan/ca/authority/internal/csrtest"
	"github.com/castellan-dev/castellan/ca/authority/internal/pkitest"
	"github.com/castellan-dev/castellan/ca/authority/leaf"
	"github.com/castellan-dev/castellan/internal/clock/clocktest"
)

// checkLeaf checks that cert is signed by a's intermediate and verifies as
// an X.509-SVID for id against a's bundle at now.
func checkLeaf(t *testing.T, a *Authority, cert *x509.Certificate, id spiffeid.ID, now time.Time) {
	t.Helper()
	if err := cert.CheckSignatureFrom(a.Intermediate()); err != nil {
		t.Errorf("CheckSignatureFrom(intermediate): %v", err)
	}
	chain := append([]*x509.Certificate{cert}, a.keys().Chain...)
	got, _, err := x509svid.Verify(chain, a.Bundle(), x509svid.WithTime(now))
	if err != nil {
		t.Errorf("x509svid.Verify: %v", err)
	} else if got != id {
		t.Errorf("x509svid.Verify ID = %v, want %v", got, id)
	}
}

// newAuthorityWithIntermediate returns an Authority plugged in from files:
// a generated P-256 root and an intermediate over interKey, both valid from
// clock.now.
func newAuthorityWithIntermediate(t *testing.T, clock *testClock, interKey crypto.Signer) *Authority {
	t.Helper()
	rootKey, root, err := pkitest.NewRoot(testTD, clock.now, DefaultRootTTL)
	if err != nil {
		t.Fatal(err)
	}
	tmpl, err := pkitest.CATemplate(testTD, pkitest.IntermediateCommonName, clock.now, clock.now.Add(DefaultIntermediateTTL))
	if err != nil {
		t.Fatal(err)
	}
	tmpl.MaxPathLen, tmpl.MaxPathLenZero = 0, true
	inter, err := pkitest.CreateCert(tmpl, root, interKey.Public(), rootKey)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	a, err := New(Config{
		TrustDomain:          testTD,
		RootCertFile:         pkitest.WritePEM(t, dir, "root.pem", root),
		IntermediateCertFile: pkitest.WritePEM(t, dir, "inter.pem", inter),
		IntermediateKeyFile:  pkitest.WriteKey(t, dir, "inter.key", interKey),
		Clock:                clocktest.Func(clock.Now),
		Logger:               discardLogger(),
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return a
}

// testIssuers are the CAs Sign is checked with: a generated P-256 one and
// plugged-in P-384 and RSA-2048 ones.
func testIssuers(t *testing.T, clock *testClock) map[string]*Authority {
	t.Helper()
	return map[string]*Authority{
		"p256-issuer":    newTestAuthority(t, clock),
		"p384-issuer":    newAuthorityWithIntermediate(t, clock, csrtest.ECKey(t, elliptic.P384())),
		"rsa2048-issuer": newAuthorityWithIntermediate(t, clock, csrtest.RSAKey(t, 2048)),
	}
}

func testLeafKeys(t *testing.T) map[string]crypto.Signer {
	return map[string]crypto.Signer{
		"p256-leaf":    csrtest.ECKey(t, elliptic.P256()),
		"p384-leaf":    csrtest.ECKey(t, elliptic.P384()),
		"rsa2048-leaf": csrtest.RSAKey(t, 2048),
	}
}

// TestSignMatchesCreateCertificate: the leaf Sign returns, for P-256, P-384
// and RSA issuers (plugged in: the test needs their keys) and every leaf
// key type, has the TBSCertificate x509.CreateCertificate encodes over the
// same fields (the encoder itself is compared field by field in package
// leaf), the usages of the X.509-SVID spec, and verifies as an SVID.
func TestSignMatchesCreateCertificate(t *testing.T) {
	clock := &testClock{now: time.Date(2030, 1, 2, 3, 4, 5, 987654321, time.UTC)}
	issuerKeys := map[string]crypto.Signer{"p256-issuer": csrtest.ECKey(t, elliptic.P256()), "p384-issuer": csrtest.ECKey(t, elliptic.P384()), "rsa2048-issuer": csrtest.RSAKey(t, 2048)}
	for in, interKey := range issuerKeys {
		a := newAuthorityWithIntermediate(t, clock, interKey)
		for kn, key := range testLeafKeys(t) {
			t.Run(in+"/"+kn, func(t *testing.T) {
				csr, err := a.ParseWorkloadCSR(csrtest.WorkloadCSR(t, key))
				if err != nil {
					t.Fatal(err)
				}
				iss, err := a.Sign(context.Background(), csr, csr.ID, 0)
				if err != nil {
					t.Fatal(err)
				}
				cert := iss.Chain[0]
				checkLeaf(t, a, cert, csr.ID, clock.now)
				wantDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
					SerialNumber: cert.SerialNumber, NotBefore: cert.NotBefore, NotAfter: cert.NotAfter,
					URIs: cert.URIs, KeyUsage: cert.KeyUsage, ExtKeyUsage: cert.ExtKeyUsage,
					BasicConstraintsValid: true, AuthorityKeyId: cert.AuthorityKeyId,
				}, a.Intermediate(), key.Public(), interKey)
				if err != nil {
					t.Fatal(err)
				}
				want, err := x509.ParseCertificate(wantDER)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(cert.RawTBSCertificate, want.RawTBSCertificate) {
					t.Errorf("TBSCertificate differs from crypto/x509's:\nours %x\nx509 %x", cert.RawTBSCertificate, want.RawTBSCertificate)
				}
				wantKU := x509.KeyUsageDigitalSignature
				if kn == "rsa2048-leaf" {
					wantKU |= x509.KeyUsageKeyEncipherment
				}
				if cert.KeyUsage != wantKU || !csrtest.Critical(t, cert, oidKeyUsage) || !csrtest.Critical(t, cert, oidSubjectAltName) ||
					!csrtest.Critical(t, cert, oidBasicConstraints) || len(cert.AuthorityKeyId) == 0 {
					t.Errorf("leaf: KU %b, AKI %x; KU, SAN and basic constraints must be critical", cert.KeyUsage, cert.AuthorityKeyId)
				}
			})
		}
	}
}

// TestSignHandBuiltCSR signs a CSR with no parsed request behind it (the
// SubjectPublicKeyInfo is marshalled from the key).
func TestSignHandBuiltCSR(t *testing.T) {
	clock := newTestClock()
	a := newTestAuthority(t, clock)
	key := csrtest.ECKey(t, elliptic.P256())
	id := spiffeid.RequireFromString("spiffe://example.org/castellan/agent/node-1")
	iss, err := a.Sign(context.Background(), &leaf.CSR{PublicKey: key.Public()}, id, 0)
	if err != nil {
		t.Fatal(err)
	}
	checkLeaf(t, a, iss.Chain[0], id, clock.now)
	if !csrtest.PublicKeyEqual(iss.Chain[0].PublicKey, key.Public()) {
		t.Error("leaf public key is not the CSR's")
	}
}
