package rotation_test

import (
	"crypto/x509"
	"log/slog"
	"math/big"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/castellan-dev/castellan/ca/authority"
	"github.com/castellan-dev/castellan/internal/clock/clocktest"
)

// The journal runner is tested through the Authority that embeds it: the
// transitions, the schedule, following replicas, the plug-in files and
// the sealed keys, on real bbolt stores.

var testTD = spiffeid.RequireTrustDomainFromString("example.org")

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// newTestAuthority returns an Authority without journal, generated in a
// temp dir.
func newTestAuthority(t testing.TB) *authority.Authority {
	t.Helper()
	a, err := authority.New(authority.Config{TrustDomain: testTD, DataDir: t.TempDir(),
		Clock: clocktest.Func(func() time.Time { return time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC) })})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return a
}

// signsAs fails t unless a signs with the private key of cert: a CRL it
// signs verifies under cert.
func signsAs(t testing.TB, a *authority.Authority, cert *x509.Certificate) {
	t.Helper()
	now := cert.NotBefore.Add(time.Minute)
	der, err := a.SignCRL(&x509.RevocationList{Number: big.NewInt(1), ThisUpdate: now, NextUpdate: now.Add(time.Hour)})
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
