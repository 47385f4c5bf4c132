package leaf

import (
	"bytes"
	"crypto"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/ca/authority/internal/csrtest"
	"github.com/castellan-dev/castellan/ca/authority/leaf/internal/tbs"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// testIssuers are the intermediates the encoder is checked with: a P-256
// one shaped as the CA generates it, and plugged-in P-384 and RSA-2048
// ones, all valid from now.
func testIssuers(t *testing.T, now time.Time) map[string]*testCA {
	t.Helper()
	plugged := func(key crypto.Signer) *testCA {
		return newTestCA(t, key, pkix.Name{Organization: []string{"Castellan"}, CommonName: "Castellan Intermediate CA"},
			nil, testTD.ID().URL(), now.Add(-Backdate), now.Add(365*24*time.Hour))
	}
	return map[string]*testCA{
		"p256-issuer":    castellanCA(t, now),
		"p384-issuer":    plugged(csrtest.ECKey(t, elliptic.P384())),
		"rsa2048-issuer": plugged(csrtest.RSAKey(t, 2048)),
	}
}

func testLeafKeys(t *testing.T) map[string]crypto.Signer {
	return map[string]crypto.Signer{
		"p256-leaf":    csrtest.ECKey(t, elliptic.P256()),
		"p384-leaf":    csrtest.ECKey(t, elliptic.P384()),
		"rsa2048-leaf": csrtest.RSAKey(t, 2048),
	}
}

// createBoth signs tmpl with our encoder and with x509.CreateCertificate and
// returns both parsed leaves.
func createBoth(t *testing.T, ca *testCA, tmpl *x509.Certificate, csr *CSR) (ours, want *x509.Certificate) {
	t.Helper()
	der, err := Create(tmpl, ca.cert, csr.PublicKey, ca.key)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	ours, err = x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("our leaf does not parse: %v", err)
	}
	wantDER, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, csr.PublicKey, ca.key)
	if err != nil {
		t.Fatalf("x509.CreateCertificate: %v", err)
	}
	want, err = x509.ParseCertificate(wantDER)
	if err != nil {
		t.Fatal(err)
	}
	return ours, want
}

type extSummary struct {
	id       string
	critical bool
	value    []byte
}

func extensions(c *x509.Certificate) []extSummary {
	var out []extSummary
	for _, e := range c.Extensions {
		out = append(out, extSummary{e.Id.String(), e.Critical, e.Value})
	}
	return out
}

// compareLeaves fails t unless got matches want (made by crypto/x509) in
// every field that matters and, except for the signature, byte for byte.
func compareLeaves(t *testing.T, got, want *x509.Certificate) {
	t.Helper()
	check := func(field string, ok bool, g, w any) {
		t.Helper()
		if !ok {
			t.Errorf("%s: ours %v, crypto/x509 %v", field, g, w)
		}
	}
	check("Version", got.Version == want.Version, got.Version, want.Version)
	check("SerialNumber", got.SerialNumber.Cmp(want.SerialNumber) == 0, got.SerialNumber, want.SerialNumber)
	check("SignatureAlgorithm", got.SignatureAlgorithm == want.SignatureAlgorithm, got.SignatureAlgorithm, want.SignatureAlgorithm)
	check("RawIssuer", bytes.Equal(got.RawIssuer, want.RawIssuer), got.Issuer, want.Issuer)
	check("RawSubject", bytes.Equal(got.RawSubject, want.RawSubject), got.RawSubject, want.RawSubject)
	check("NotBefore", got.NotBefore.Equal(want.NotBefore), got.NotBefore, want.NotBefore)
	check("NotAfter", got.NotAfter.Equal(want.NotAfter), got.NotAfter, want.NotAfter)
	check("PublicKey", csrtest.PublicKeyEqual(got.PublicKey, want.PublicKey), got.PublicKeyAlgorithm, want.PublicKeyAlgorithm)
	check("RawSubjectPublicKeyInfo", bytes.Equal(got.RawSubjectPublicKeyInfo, want.RawSubjectPublicKeyInfo), len(got.RawSubjectPublicKeyInfo), len(want.RawSubjectPublicKeyInfo))
	gotURIs, wantURIs := urlStrings(got.URIs), urlStrings(want.URIs)
	check("URIs", slices.Equal(gotURIs, wantURIs), gotURIs, wantURIs)
	check("DNS/IP/email SANs", len(got.DNSNames)+len(got.IPAddresses)+len(got.EmailAddresses) == 0, got.DNSNames, nil)
	check("KeyUsage", got.KeyUsage == want.KeyUsage, got.KeyUsage, want.KeyUsage)
	check("ExtKeyUsage", slices.Equal(got.ExtKeyUsage, want.ExtKeyUsage), got.ExtKeyUsage, want.ExtKeyUsage)
	check("UnknownExtKeyUsage", len(got.UnknownExtKeyUsage) == len(want.UnknownExtKeyUsage), got.UnknownExtKeyUsage, want.UnknownExtKeyUsage)
	check("BasicConstraintsValid", got.BasicConstraintsValid == want.BasicConstraintsValid, got.BasicConstraintsValid, want.BasicConstraintsValid)
	check("IsCA", got.IsCA == want.IsCA, got.IsCA, want.IsCA)
	check("MaxPathLen", got.MaxPathLen == want.MaxPathLen && got.MaxPathLenZero == want.MaxPathLenZero, got.MaxPathLen, want.MaxPathLen)
	check("AuthorityKeyId", bytes.Equal(got.AuthorityKeyId, want.AuthorityKeyId), got.AuthorityKeyId, want.AuthorityKeyId)
	check("SubjectKeyId", bytes.Equal(got.SubjectKeyId, want.SubjectKeyId), got.SubjectKeyId, want.SubjectKeyId)
	gotExt, wantExt := extensions(got), extensions(want)
	check("Extensions (OID, critical, value, order)", slices.EqualFunc(gotExt, wantExt, func(a, b extSummary) bool {
		return a.id == b.id && a.critical == b.critical && bytes.Equal(a.value, b.value)
	}), gotExt, wantExt)
	check("RawTBSCertificate", bytes.Equal(got.RawTBSCertificate, want.RawTBSCertificate),
		len(got.RawTBSCertificate), len(want.RawTBSCertificate))
}

func urlStrings(us []*url.URL) []string {
	var out []string
	for _, u := range us {
		out = append(out, u.String())
	}
	return out
}

// checkLeaf checks that cert is signed by ca's intermediate and verifies
// as an X.509-SVID for id against ca's root at now.
func checkLeaf(t *testing.T, ca *testCA, cert *x509.Certificate, id spiffeid.ID, now time.Time) {
	t.Helper()
	if err := cert.CheckSignatureFrom(ca.cert); err != nil {
		t.Errorf("CheckSignatureFrom(intermediate): %v", err)
	}
	bundle := x509bundle.FromX509Authorities(testTD, []*x509.Certificate{ca.root})
	got, _, err := x509svid.Verify([]*x509.Certificate{cert, ca.cert}, bundle, x509svid.WithTime(now))
	if err != nil {
		t.Errorf("x509svid.Verify: %v", err)
	} else if got != id {
		t.Errorf("x509svid.Verify ID = %v, want %v", got, id)
	}
}

// TestCreateLeafMatchesCreateCertificate signs the same templates with our
// encoder and with crypto/x509 for every issuer and leaf key type, and
// requires identical certificates up to the signature.
func TestCreateLeafMatchesCreateCertificate(t *testing.T) {
	// Sub-second clock: both encoders must truncate to the second alike.
	now := time.Date(2030, 1, 2, 3, 4, 5, 987654321, time.UTC)
	issuers := testIssuers(t, now)
	keys := testLeafKeys(t)
	for _, in := range []string{"p256-issuer", "p384-issuer", "rsa2048-issuer"} {
		ca := issuers[in]
		for _, kn := range []string{"p256-leaf", "p384-leaf", "rsa2048-leaf"} {
			t.Run(in+"/"+kn, func(t *testing.T) {
				csr, err := ParseWorkloadCSR(testTD, csrtest.WorkloadCSR(t, keys[kn]))
				if err != nil {
					t.Fatal(err)
				}
				for _, profile := range []string{ProfileWorkload, ProfileAgent} {
					tmpl := ca.template(t, now, profile, csr, csr.ID, 90*time.Minute)
					ours, want := createBoth(t, ca, tmpl, csr)
					compareLeaves(t, ours, want)
					checkLeaf(t, ca, ours, csr.ID, now)
					wantKU := x509.KeyUsageDigitalSignature
					if kn == "rsa2048-leaf" {
						wantKU |= x509.KeyUsageKeyEncipherment
					}
					if ours.KeyUsage != wantKU || !csrtest.Critical(t, ours, oidKeyUsage) || !csrtest.Critical(t, ours, oidSubjectAltName) ||
						!csrtest.Critical(t, ours, oidBasicConstraints) || len(ours.AuthorityKeyId) == 0 {
						t.Errorf("leaf: KU %b, AKI %x; KU, SAN and basic constraints must be critical", ours.KeyUsage, ours.AuthorityKeyId)
					}
				}
			})
		}
	}
}

// TestCreateLeafEncodesEveryUsage compares the KeyUsage and EKU encodings
// with crypto/x509's for every key usage bit combination and every EKU.
func TestCreateLeafEncodesEveryUsage(t *testing.T) {
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	ca := castellanCA(t, now)
	csr, err := ParseWorkloadCSR(testTD, csrtest.WorkloadCSR(t, csrtest.ECKey(t, elliptic.P256())))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := ca.template(t, now, ProfileWorkload, csr, csr.ID, time.Hour)
	for ku := x509.KeyUsage(1); ku < 1<<9; ku++ {
		tmpl.KeyUsage = ku
		ours, want := createBoth(t, ca, tmpl, csr)
		if ours.KeyUsage != ku || !bytes.Equal(ours.RawTBSCertificate, want.RawTBSCertificate) {
			t.Fatalf("key usage %#x: ours decodes to %#x, TBS equal %v", ku, ours.KeyUsage,
				bytes.Equal(ours.RawTBSCertificate, want.RawTBSCertificate))
		}
	}
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	tmpl.ExtKeyUsage = tbs.ExtKeyUsages()
	ours, want := createBoth(t, ca, tmpl, csr)
	compareLeaves(t, ours, want)

	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsage(1000)}
	if _, err := Create(tmpl, ca.cert, csr.PublicKey, ca.key); err == nil {
		t.Error("Create accepted an unknown extended key usage")
	}
	tmpl.ExtKeyUsage, tmpl.IsCA = nil, true
	if _, err := Create(tmpl, ca.cert, csr.PublicKey, ca.key); err == nil {
		t.Error("Create issued a CA certificate")
	}
	tmpl.IsCA, tmpl.SerialNumber = false, big.NewInt(0)
	if _, err := Create(tmpl, ca.cert, csr.PublicKey, ca.key); err == nil {
		t.Error("Create accepted serial number 0")
	}
}

// TestCreateLeafAcross2050 issues a leaf whose NotBefore is a UTCTime (2049)
// and whose NotAfter must be a GeneralizedTime (2050), under a CA generated
// in 2049 whose own validity crosses the boundary too.
func TestCreateLeafAcross2050(t *testing.T) {
	now := time.Date(2049, 12, 31, 23, 30, 0, 0, time.UTC)
	ca := castellanCA(t, now)
	csr, err := ParseWorkloadCSR(testTD, csrtest.WorkloadCSR(t, csrtest.ECKey(t, elliptic.P256())))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := ca.template(t, now, ProfileWorkload, csr, csr.ID, time.Hour)
	ours, want := createBoth(t, ca, tmpl, csr)
	compareLeaves(t, ours, want)
	if ours.NotAfter.Year() != 2050 || ours.NotBefore.Year() != 2049 {
		t.Fatalf("validity %v - %v does not cross 2050", ours.NotBefore, ours.NotAfter)
	}
	// RFC 5280 4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050.
	tbs := cryptobyte.String(ours.RawTBSCertificate)
	var body, validity cryptobyte.String
	ok := tbs.ReadASN1(&body, cbasn1.SEQUENCE) &&
		body.SkipOptionalASN1(cbasn1.Tag(0).Constructed().ContextSpecific()) &&
		body.SkipASN1(cbasn1.INTEGER) && body.SkipASN1(cbasn1.SEQUENCE) && body.SkipASN1(cbasn1.SEQUENCE) &&
		body.ReadASN1(&validity, cbasn1.SEQUENCE)
	var nb, na cryptobyte.String
	var nbTag, naTag cbasn1.Tag
	ok = ok && validity.ReadAnyASN1(&nb, &nbTag) && validity.ReadAnyASN1(&na, &naTag)
	if !ok || nbTag != cbasn1.UTCTime || naTag != cbasn1.GeneralizedTime {
		t.Errorf("validity tags %v, %v (parsed %v); want UTCTime then GeneralizedTime", nbTag, naTag, ok)
	}
	checkLeaf(t, ca, ours, csr.ID, now.Add(45*time.Minute))
}

// TestCreateReencodesCSRPublicKey encodes leaves over RSA CSRs whose
// SubjectPublicKeyInfo carries bytes the CSR parser ignores (after the
// RSAPublicKey, or as an extra element inside it), as Sign does. The leaf
// must carry the key as crypto/x509 encodes it, never the requester's
// bytes: FuzzLeafTBS found that the encoder once copied them into the leaf.
func TestCreateReencodesCSRPublicKey(t *testing.T) {
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	ca := castellanCA(t, now)
	key := csrtest.RSAKey(t, 2048)
	k := fuzzKey{name: "rsa2048", key: key, csr: csrtest.WorkloadCSR(t, key)}
	want, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	for _, inside := range []bool{false, true} {
		der := rsaCSRWithSPKITail(t, k, []byte("attacker-chosen"), inside)
		csr, err := ParseWorkloadCSR(testTD, der)
		if err != nil {
			t.Fatalf("inside=%v: the CSR parser now refuses the padded key (%v); keep this test's premise in sync", inside, err)
		}
		if bytes.Equal(csr.RawSubjectPublicKeyInfo, want) {
			t.Fatalf("inside=%v: the CSR's SubjectPublicKeyInfo is not padded; the test proves nothing", inside)
		}
		tmpl := ca.template(t, now, ProfileWorkload, csr, csr.ID, 0)
		leafDER, err := Create(tmpl, ca.cert, csr.PublicKey, ca.key)
		if err != nil {
			t.Fatal(err)
		}
		alg, err := AlgorithmFor(ca.key)
		if err != nil {
			t.Fatal(err)
		}
		cert, err := Certificate(leafDER, tmpl, ca.cert, csr.PublicKey, alg)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(cert.RawSubjectPublicKeyInfo, want) || bytes.Contains(leafDER, []byte("attacker-chosen")) {
			t.Errorf("inside=%v: leaf SubjectPublicKeyInfo %x, want %x", inside, cert.RawSubjectPublicKeyInfo, want)
		}
		checkLeaf(t, ca, cert, csr.ID, now)
	}
}
