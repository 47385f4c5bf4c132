package authority

import (
	"crypto"
	"crypto/x509"
	"math/big"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/ca/authority/internal/pkitest"
)

// signsAs fails t unless a signs with the private key of cert: a CRL it
// signs verifies under cert.
func signsAs(t testing.TB, a *Authority, cert *x509.Certificate) {
	t.Helper()
	der, err := a.SignCRL(&x509.RevocationList{Number: big.NewInt(1), ThisUpdate: a.clock.Now(), NextUpdate: a.clock.Now().Add(time.Hour)})
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
	rootKey, root, err := pkitest.NewRoot(testTD, now, DefaultRootTTL)
	if err != nil {
		b.Fatal(err)
	}
	key, inter, err := pkitest.NewIntermediate(testTD, now, DefaultIntermediateTTL, root, rootKey)
	if err != nil {
		b.Fatal(err)
	}
	return inter, key
}
