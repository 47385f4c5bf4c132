package authority

import (
	"context"
	"crypto/elliptic"
	"testing"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

func TestSignedLeafVerifiesAgainstBundle(t *testing.T) {
	clock := newTestClock()
	a := newTestAuthority(t, clock)
	csr, err := a.ParseWorkloadCSR(workloadCSR(t, ecKey(t, elliptic.P256())))
	if err != nil {
		t.Fatal(err)
	}
	iss, err := a.Sign(context.Background(), csr, csr.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	id, _, err := x509svid.Verify(iss.Chain, a.Bundle(), x509svid.WithTime(clock.now))
	if err != nil || id != csr.ID {
		t.Fatalf("Verify = %v, %v", id, err)
	}
}
