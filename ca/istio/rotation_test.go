package istio_test

import (
	"context"
	"crypto/x509"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	pb "istio.io/api/security/v1alpha1"

	"github.com/castellan-dev/castellan/ca/authority"
	"github.com/castellan-dev/castellan/ca/istio"
	"github.com/castellan-dev/castellan/ca/store/boltstore"
)

// rootsOf returns the roots of a response's last element, in order.
func rootsOf(t *testing.T, resp *pb.IstioCertificateResponse) []*x509.Certificate {
	t.Helper()
	chain := resp.GetCertChain()
	b, err := x509bundle.Parse(td, []byte(chain[len(chain)-1]))
	if err != nil {
		t.Fatal(err)
	}
	return b.X509Authorities()
}

// TestCreateCertificateDuringRootRotation: through a root rotation the
// response carries the chain of the authority that signs and every root of
// the bundle, the issuing root first, so a sidecar trusts peers on either
// side of the rotation.
func TestCreateCertificateDuringRootRotation(t *testing.T) {
	ctx := context.Background()
	journal, err := boltstore.Open(filepath.Join(t.TempDir(), "authority.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { journal.Close() })
	auth, err := authority.Open(ctx, authority.Config{TrustDomain: td, DataDir: t.TempDir(), Journal: journal})
	if err != nil {
		t.Fatal(err)
	}
	ca := newCAWith(t, istio.Config{}, auth)
	const id = "spiffe://cluster.local/ns/default/sa/default"
	ca.entry(t, id, "node-a", time.Hour)
	first := auth.Snapshot()
	svid := ca.sign(t, id, "node-a")

	next, err := auth.Prepare(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	csr, key := csrPEM(t, id)
	resp, err := ca.client(t, svid).CreateCertificate(ctx, request(csr, 0, ""))
	if err != nil {
		t.Fatal(err)
	}
	got := verifyChain(t, resp, key)
	roots := rootsOf(t, resp)
	if !got.Certificates[1].Equal(first.Chain[0]) || len(roots) != 2 || !roots[0].Equal(first.Root) || !roots[1].Equal(next.Roots[0]) {
		t.Fatalf("prepared new root: chain under %s with %d roots; want the old intermediate, then the old root and the new", got.Certificates[1].Subject, len(roots))
	}

	if _, err := auth.Activate(ctx, next.ID, true); err != nil {
		t.Fatal(err)
	}
	csr, key = csrPEM(t, id)
	resp, err = ca.client(t, got).CreateCertificate(ctx, request(csr, 0, ""))
	if err != nil {
		t.Fatal(err)
	}
	got = verifyChain(t, resp, key)
	roots = rootsOf(t, resp)
	if !got.Certificates[1].Equal(next.Chain[0]) || len(roots) != 2 || !roots[0].Equal(next.Roots[0]) || !roots[1].Equal(first.Root) {
		t.Fatal("after activation: want the new intermediate, then the new root first and the old one still trusted")
	}
}
