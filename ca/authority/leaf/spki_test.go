package leaf

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"math/big"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/ca/authority/internal/csrtest"
)

// TestCreateEncodesOtherKeysThroughCrypto509: Create writes P-256 and
// P-384 keys itself and hands every other key to
// x509.MarshalPKIXPublicKey. A P-521 and a P-224 key (which the CSR
// checks refuse, but Create is not where that is decided) come out as
// crypto/x509 encodes them, and a P-256 point off the curve is refused,
// as crypto/x509 refuses it, rather than written.
func TestCreateEncodesOtherKeysThroughCrypto509(t *testing.T) {
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	ca := castellanCA(t, now)
	csr, err := ParseWorkloadCSR(testTD, csrtest.WorkloadCSR(t, csrtest.ECKey(t, elliptic.P256())))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := ca.template(t, now, ProfileWorkload, csr, csr.ID, time.Hour)
	for _, curve := range []elliptic.Curve{elliptic.P521(), elliptic.P224()} {
		pub := csrtest.ECKey(t, curve).Public()
		ours, want := createBoth(t, ca, tmpl, &CSR{ID: csr.ID, PublicKey: pub})
		if !bytes.Equal(ours.RawTBSCertificate, want.RawTBSCertificate) {
			t.Errorf("%s key: TBSCertificate differs from crypto/x509's", curve.Params().Name)
		}
	}

	good := csr.PublicKey.(*ecdsa.PublicKey)
	//lint:ignore SA1019 an invalid key can only be built from its coordinates
	offCurve := &ecdsa.PublicKey{Curve: elliptic.P256(), X: good.X, Y: new(big.Int).Add(good.Y, big.NewInt(1))}
	if _, err := offCurve.Bytes(); err == nil {
		t.Fatal("ecdsa accepts the point; the test proves nothing")
	}
	if _, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, offCurve, ca.key); err == nil {
		t.Fatal("crypto/x509 encodes a point off the curve; the test's premise is gone")
	}
	if der, err := Create(tmpl, ca.cert, offCurve, ca.key); err == nil {
		t.Fatalf("Create encoded a point off the curve: %x", der)
	}
}
