package rotation_test

import (
	"crypto/x509"
	"math/big"
	"testing"
	"time"
)

// TestSignCRLFollowsTheActiveAuthority signs a CRL, activates another
// authority, and signs again: each list verifies under the authority that
// was active, and the first does not verify under the second.
func TestSignCRLFollowsTheActiveAuthority(t *testing.T) {
	e := newJournalEnv(t)
	a := e.open()
	now := e.clock.Now()
	tmpl := func() *x509.RevocationList {
		return &x509.RevocationList{Number: big.NewInt(now.UnixNano()), ThisUpdate: now, NextUpdate: now.Add(time.Hour),
			RevokedCertificateEntries: []x509.RevocationListEntry{{SerialNumber: big.NewInt(0xa2), RevocationTime: now, ReasonCode: 1}}}
	}
	first := a.Intermediate()
	der, err := a.SignCRL(tmpl())
	if err != nil {
		t.Fatal(err)
	}
	list := mustParseCRL(t, der)
	if err := list.CheckSignatureFrom(first); err != nil {
		t.Fatalf("CRL not signed by the active intermediate: %v", err)
	}
	if len(list.RevokedCertificateEntries) != 1 || list.RevokedCertificateEntries[0].SerialNumber.Int64() != 0xa2 {
		t.Fatalf("entries = %+v", list.RevokedCertificateEntries)
	}
	next, err := a.Prepare(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	changed := a.Changed()
	if _, err := a.Activate(ctx, next.ID, true); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	default:
		t.Fatal("Changed did not fire on activation: a CRL handler would keep the old signer's list")
	}
	der, err = a.SignCRL(tmpl())
	if err != nil {
		t.Fatal(err)
	}
	if err := mustParseCRL(t, der).CheckSignatureFrom(next.Chain[0]); err != nil {
		t.Fatalf("CRL after activation not signed by the new intermediate: %v", err)
	}
	if err := mustParseCRL(t, der).CheckSignatureFrom(first); err == nil {
		t.Fatal("CRL after activation verifies under the old intermediate")
	}
	if _, err := a.SignCRL(nil); err == nil {
		t.Fatal("SignCRL(nil) succeeded")
	}
}

func mustParseCRL(t *testing.T, der []byte) *x509.RevocationList {
	t.Helper()
	list, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatal(err)
	}
	return list
}
