package main

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/castellan-dev/castellan/ca/authority"
	"github.com/castellan-dev/castellan/ca/crl"
	"github.com/castellan-dev/castellan/ca/ledger"
	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/ca/ledger/index"
	"github.com/castellan-dev/castellan/ca/store/boltstore"
	"github.com/castellan-dev/castellan/cmd/castellan-server/internal/config"
	"github.com/castellan-dev/castellan/internal/serial"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// TestEveryTransitionIsALedgerEvent opens a rotating CA as serve does and
// checks that the bootstrap and each operator transition is one
// ca_key_change event naming the authority, its states and the signing
// certificate; and that with no writable ledger nothing changes.
func TestEveryTransitionIsALedgerEvent(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	cfg := config.Default()
	cfg.DataDir = dir
	td := spiffeid.RequireTrustDomainFromString(cfg.TrustDomain)
	led, err := ledger.Open(filepath.Join(dir, ledgerFile), ledger.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer led.Close()
	journal, err := openBoltJournal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer journal.Close()
	auth, err := openAuthority(ctx, cfg, td, journal, led, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	first := auth.Snapshot()
	next, err := auth.Prepare(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := auth.Activate(ctx, next.ID, true); err != nil {
		t.Fatal(err)
	}
	entries, _, err := led.List(ctx, index.Filter{Kinds: []entry.Kind{entry.KindCAKeyChange}}, 100, "")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"authority " + first.ActiveID + " (managed): new -> active: bootstrap",
		"authority " + next.ID + " (managed): new -> prepared: operator: prepare",
		"authority " + first.ActiveID + " (managed): active -> old: superseded by " + next.ID,
		"authority " + next.ID + " (managed): prepared -> active: operator: activate",
	}
	if len(entries) != len(want) {
		t.Fatalf("%d ca_key_change events, want %d: %+v", len(entries), len(want), entries)
	}
	for i, e := range entries {
		if !strings.HasPrefix(e.Reason, want[i]) {
			t.Errorf("event %d reason %q, want prefix %q", i, e.Reason, want[i])
		}
	}
	last := entries[3]
	sum := sha256.Sum256(next.Chain[0].RawSubjectPublicKeyInfo)
	if last.Serial != serial.FromBig(next.Chain[0].SerialNumber).String() || last.PublicKeySHA256 != hex.EncodeToString(sum[:]) ||
		!last.NotAfter.Equal(next.Chain[0].NotAfter) || last.SPIFFEID != td.IDString() {
		t.Fatalf("activation event does not describe the new intermediate: %+v", last.Event)
	}

	// Forensic mode: no writable ledger, no transition.
	ro, err := openAuthority(ctx, cfg, td, journal, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ro.Prepare(ctx, false); err == nil || !strings.Contains(err.Error(), "read-only") {
		t.Fatalf("prepare without a writable ledger: %v, want a refusal naming it", err)
	}
}

// TestCRLFollowsTheSigningAuthority: /crl is signed by the active
// intermediate, before and after a rotation, with nothing to tell it but
// the authority's own change signal.
func TestCRLFollowsTheSigningAuthority(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	led, err := ledger.Open(filepath.Join(dir, ledgerFile), ledger.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer led.Close()
	journal, err := boltstore.Open(filepath.Join(dir, authorityFile))
	if err != nil {
		t.Fatal(err)
	}
	defer journal.Close()
	auth, err := authority.Open(ctx, authority.Config{TrustDomain: spiffeid.RequireTrustDomainFromString("cluster.local"),
		DataDir: dir, Journal: journal})
	if err != nil {
		t.Fatal(err)
	}
	h := crl.New(led, auth, crl.Config{})
	check := func(issuer *x509.Certificate) {
		t.Helper()
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/crl", nil))
		list, err := x509.ParseRevocationList(rec.Body.Bytes())
		if err != nil {
			t.Fatalf("GET /crl: %v (%d %s)", err, rec.Code, rec.Body.String())
		}
		if err := list.CheckSignatureFrom(issuer); err != nil {
			t.Fatalf("CRL not signed by the signing intermediate: %v", err)
		}
	}
	first := auth.Snapshot()
	check(first.Chain[0])
	next, err := auth.Prepare(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := auth.Activate(ctx, next.ID, true); err != nil {
		t.Fatal(err)
	}
	check(next.Chain[0])
}
