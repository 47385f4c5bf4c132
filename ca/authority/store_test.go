package authority

import (
	"context"
	"crypto/elliptic"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/ca/authority/internal/csrtest"
	"github.com/castellan-dev/castellan/ca/authority/internal/keystore"
	"github.com/castellan-dev/castellan/ca/authority/internal/pkitest"
	"github.com/castellan-dev/castellan/internal/clock/clocktest"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

func TestNewReloadsSameCAAfterRestart(t *testing.T) {
	clock := newTestClock()
	dir := filepath.Join(t.TempDir(), "ca")
	cfg := Config{TrustDomain: testTD, DataDir: dir, Clock: clocktest.Func(clock.Now)}
	first, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("data dir mode %v, want 0700", fi.Mode().Perm())
	}
	for _, name := range []string{keystore.RootCertName, keystore.RootKeyName, keystore.IntermediateCertName, keystore.IntermediateKeyName} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", name, fi.Mode().Perm())
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 4 {
		t.Errorf("data dir holds %d entries, want exactly the 4 CA files (no temp files left)", len(entries))
	}

	clock.now = clock.now.Add(30 * 24 * time.Hour)
	second, err := New(cfg)
	if err != nil {
		t.Fatalf("restart: %v", err)
	}
	if !second.Root().Equal(first.Root()) || !second.Intermediate().Equal(first.Intermediate()) {
		t.Fatal("restart generated a new CA instead of reloading the stored one")
	}
	if !second.Bundle().Equal(first.Bundle()) {
		t.Error("bundle changed across restart")
	}
	// A leaf issued before the restart still verifies against the new bundle.
	csr, err := first.ParseWorkloadCSR(csrtest.WorkloadCSR(t, csrtest.ECKey(t, elliptic.P256())))
	if err != nil {
		t.Fatal(err)
	}
	iss, err := second.Sign(context.Background(), csr, csr.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := x509svid.Verify(iss.Chain, first.Bundle(), x509svid.WithTime(clock.now)); err != nil {
		t.Fatalf("leaf from restarted CA does not verify against the old bundle: %v", err)
	}
}

func TestNewReissuesExpiringIntermediateUnderSameRoot(t *testing.T) {
	clock := newTestClock()
	dir := t.TempDir()
	cfg := Config{TrustDomain: testTD, DataDir: dir, Clock: clocktest.Func(clock.Now)}
	first, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	clock.now = first.Intermediate().NotAfter.Add(-time.Hour) // less than MaxTTL left
	second, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !second.Root().Equal(first.Root()) {
		t.Fatal("root changed; only the intermediate should be re-issued")
	}
	if second.Intermediate().Equal(first.Intermediate()) {
		t.Fatal("intermediate with 1h left was kept; want a new one")
	}
	if err := second.Intermediate().CheckSignatureFrom(first.Root()); err != nil {
		t.Fatalf("new intermediate not signed by the root: %v", err)
	}
	third, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !third.Intermediate().Equal(second.Intermediate()) {
		t.Error("re-issued intermediate was not persisted")
	}
}

func TestNewReissuesIntermediateWhoseKeyDoesNotMatch(t *testing.T) {
	clock := newTestClock()
	dir := t.TempDir()
	cfg := Config{TrustDomain: testTD, DataDir: dir, Clock: clocktest.Func(clock.Now)}
	first, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// Simulate a crash after the new key was written but before its cert.
	keyPEM, err := pkitest.EncodeKey(csrtest.ECKey(t, elliptic.P256()))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, keystore.IntermediateKeyName), keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	second, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if second.Intermediate().Equal(first.Intermediate()) || !second.Root().Equal(first.Root()) {
		t.Fatal("want a new intermediate under the same root")
	}
	signsAs(t, second, second.Intermediate())
}

func TestNewRefusesRootWithWrongKey(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{TrustDomain: testTD, DataDir: dir, Clock: clocktest.Func(newTestClock().Now)}
	if _, err := New(cfg); err != nil {
		t.Fatal(err)
	}
	keyPEM, err := pkitest.EncodeKey(csrtest.ECKey(t, elliptic.P256()))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, keystore.RootKeyName), keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = New(cfg)
	if err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Fatalf("New with a foreign root key: %v, want a key mismatch error", err)
	}
	if err := os.Remove(filepath.Join(dir, keystore.RootKeyName)); err != nil {
		t.Fatal(err)
	}
	if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), keystore.RootKeyName) {
		t.Fatalf("New without root key: %v, want an error naming %s", err, keystore.RootKeyName)
	}
}

func TestNewRefusesExpiredRoot(t *testing.T) {
	clock := newTestClock()
	dir := t.TempDir()
	cfg := Config{TrustDomain: testTD, DataDir: dir, Clock: clocktest.Func(clock.Now), RootTTL: 48 * time.Hour, IntermediateTTL: 25 * time.Hour}
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	clock.now = a.Root().NotAfter.Add(time.Minute)
	if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("New with expired root: %v", err)
	}
}

func TestGeneratedCAShape(t *testing.T) {
	clock := newTestClock()
	a := newTestAuthority(t, clock)
	root, inter := a.Root(), a.Intermediate()
	if !root.IsCA || root.CheckSignatureFrom(root) != nil {
		t.Error("root must be a self-signed CA")
	}
	if !inter.IsCA || inter.MaxPathLen != 0 || !inter.MaxPathLenZero {
		t.Errorf("intermediate: IsCA %v MaxPathLen %d zero %v, want CA with pathlen 0", inter.IsCA, inter.MaxPathLen, inter.MaxPathLenZero)
	}
	if len(inter.URIs) != 1 || inter.URIs[0].String() != "spiffe://example.org" {
		t.Errorf("intermediate URIs %v, want spiffe://example.org", inter.URIs)
	}
	if got := root.NotAfter.Sub(clock.now); got != DefaultRootTTL {
		t.Errorf("root lifetime %v, want %v", got, DefaultRootTTL)
	}
	if got := inter.NotAfter.Sub(clock.now); got != DefaultIntermediateTTL {
		t.Errorf("intermediate lifetime %v, want %v", got, DefaultIntermediateTTL)
	}
	if inter.NotAfter.After(root.NotAfter) || inter.NotBefore.Before(root.NotBefore) {
		t.Error("intermediate validity must lie within the root's")
	}
	if len(inter.SubjectKeyId) == 0 || len(root.SubjectKeyId) == 0 {
		t.Error("CA certificates need a SubjectKeyId")
	}
	signsAs(t, a, inter)
	b := a.Bundle()
	if b.TrustDomain() != testTD || len(b.X509Authorities()) != 1 || !b.X509Authorities()[0].Equal(root) {
		t.Error("bundle must hold exactly the root")
	}
}

func TestNewClampsIntermediateToRoot(t *testing.T) {
	clock := newTestClock()
	a, err := New(Config{TrustDomain: testTD, Clock: clocktest.Func(clock.Now), RootTTL: 100 * time.Hour, IntermediateTTL: 1000 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if !a.Intermediate().NotAfter.Equal(a.Root().NotAfter) {
		t.Fatalf("intermediate NotAfter %v, want clamped to root %v", a.Intermediate().NotAfter, a.Root().NotAfter)
	}
}
