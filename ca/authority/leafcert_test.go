package authority

import (
	"context"
	"crypto"
	"crypto/x509"
	"reflect"
	"testing"

	"github.com/castellan-dev/castellan/ca/authority/internal/csrtest"
	"github.com/castellan-dev/castellan/ca/authority/leaf"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// parsedLike fails t unless leaf is exactly what crypto/x509 parses from
// its DER.
func parsedLike(t *testing.T, what string, leaf *x509.Certificate) {
	t.Helper()
	want, err := x509.ParseCertificate(leaf.Raw)
	if err != nil {
		t.Fatalf("%s: crypto/x509 does not parse the leaf: %v", what, err)
	}
	if !reflect.DeepEqual(leaf, want) {
		t.Fatalf("%s: the leaf Sign returned differs from crypto/x509's parse of it:\ngot  %+v\nwant %+v", what, leaf, want)
	}
}

// TestSignedLeafIsWhatCrypto509Parses: the first leaf of a trust domain
// is parsed, the later ones are built from what was encoded; either way
// Sign's leaf is reflect.DeepEqual to x509.ParseCertificate of its DER,
// for every issuer and leaf key type and both profiles, and the built
// leaf shares no slice with the issuer certificate or the template (a
// caller editing it cannot change the CA's certificate).
func TestSignedLeafIsWhatCrypto509Parses(t *testing.T) {
	clock := newTestClock()
	ctx := context.Background()
	id := spiffeid.RequireFromPath(testTD, "/ns/default/sa/workload")
	for in, a := range testIssuers(t, clock) {
		for kn, key := range testLeafKeys(t) {
			csr, err := a.ParseWorkloadCSR(csrtest.WorkloadCSR(t, key))
			if err != nil {
				t.Fatal(err)
			}
			agent := &leaf.CSR{PublicKey: csr.PublicKey}
			for i := range 3 {
				c, want := csr, id
				if i == 2 {
					c, want = agent, spiffeid.RequireFromPath(testTD, "/castellan/agent/node-1")
				}
				iss, err := a.Sign(ctx, c, want, 0)
				if err != nil {
					t.Fatalf("%s/%s: %v", in, kn, err)
				}
				parsedLike(t, in+"/"+kn, iss.Chain[0])
				if !a.leafParses.Load() {
					t.Fatal("a leaf was parsed but the authority does not know its trust domain parses")
				}
			}
		}
		iss, err := a.Sign(ctx, mustParse(t, a, testLeafKeys(t)["p256-leaf"]), id, 0)
		if err != nil {
			t.Fatal(err)
		}
		leaf, ca := iss.Chain[0], a.Intermediate()
		caOrg := ca.Subject.Organization[0]
		leaf.Issuer.Organization[0], leaf.Issuer.Names[0].Value = "edited", "edited"
		leaf.AuthorityKeyId[0] ^= 0xff
		if ca.Subject.Organization[0] != caOrg || ca.Subject.Names[0].Value == "edited" || ca.SubjectKeyId[0] == leaf.AuthorityKeyId[0] {
			t.Fatalf("%s: editing a signed leaf changed the CA certificate", in)
		}
	}
}

func mustParse(t *testing.T, a *Authority, key crypto.Signer) *leaf.CSR {
	t.Helper()
	csr, err := a.ParseWorkloadCSR(csrtest.WorkloadCSR(t, key))
	if err != nil {
		t.Fatal(err)
	}
	return csr
}
