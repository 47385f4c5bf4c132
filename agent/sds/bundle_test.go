package sds

import (
	"crypto/x509"
	"encoding/pem"
	"testing"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"

	"github.com/castellan-dev/castellan/agent/client/catest"
	"github.com/castellan-dev/castellan/integration/envoysds"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// rootsOf returns the roots of an update's ROOTCA.
func rootsOf(t *testing.T, u envoysds.Update) []*x509.Certificate {
	t.Helper()
	rest := u.Secrets[RootCAName].GetValidationContext().GetTrustedCa().GetInlineBytes()
	var out []*x509.Certificate
	for {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			return out
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
}

// TestBundleChangeAloneIsPushedAsROOTCA publishes a new root (a CA
// rotation's prepared authority) with the same SVID: the open stream
// receives ROOTCA with both roots and an unchanged default, then ROOTCA
// without the old root once it leaves.
func TestBundleChangeAloneIsPushedAsROOTCA(t *testing.T) {
	h := newHarness(t, workload)
	c := startClient(t, h.conn(t), nil)
	first := nextUpdate(t, c)
	if n := len(rootsOf(t, first)); n != 1 {
		t.Fatalf("first ROOTCA has %d roots", n)
	}
	next := catest.New(t, spiffeid.RequireTrustDomainFromString("cluster.local"))
	cur := h.store.Current()
	both := append(h.ca.Bundle().X509Authorities(), next.Bundle().X509Authorities()...)
	h.store.Publish(cur.Identities, x509bundle.FromX509Authorities(h.ca.TrustDomain, both))

	u := nextUpdate(t, c)
	roots := rootsOf(t, u)
	if len(roots) != 2 || !roots[1].Equal(next.Bundle().X509Authorities()[0]) {
		t.Fatalf("ROOTCA after the change has %d roots, want the old and the new", len(roots))
	}
	verifyUpdate(t, u, cur.Identities[0].SVID) // default unchanged, still verifies
	if u.Version == first.Version {
		t.Fatal("version unchanged on a bundle change")
	}
	h.store.Publish(cur.Identities, next.Bundle())
	if roots := rootsOf(t, nextUpdate(t, c)); len(roots) != 1 || !roots[0].Equal(next.Bundle().X509Authorities()[0]) {
		t.Fatalf("ROOTCA after the old root left: %d roots", len(roots))
	}
}
