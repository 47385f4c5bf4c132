package leaf

import (
	"bytes"
	"crypto/elliptic"
	"crypto/x509"
	"crypto/x509/pkix"
	"net/url"
	"reflect"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/ca/authority/internal/csrtest"
	"github.com/castellan-dev/castellan/ca/authority/leaf/internal/tbs"
)

// certificateBoth encodes tmpl under ca with Create and returns what
// Certificate builds from it and what x509.ParseCertificate parses.
func certificateBoth(t *testing.T, ca *testCA, tmpl *x509.Certificate, csr *CSR) (built, parsed *x509.Certificate) {
	t.Helper()
	der, err := Create(tmpl, ca.cert, csr.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	alg, err := AlgorithmFor(ca.key)
	if err != nil {
		t.Fatal(err)
	}
	if built, err = Certificate(der, tmpl, ca.cert, csr.PublicKey, alg); err != nil {
		t.Fatal(err)
	}
	if parsed, err = x509.ParseCertificate(der); err != nil {
		t.Fatal(err)
	}
	return built, parsed
}

// TestCertificateBeyondItsBlock builds leaves with more than Certificate
// keeps room for in its one allocation (three URI SANs, every EKU, a
// 32-byte key ID, an issuer of eleven attributes with several values per
// field): what does not fit is allocated on its own, and the result is
// still reflect.DeepEqual to crypto/x509's parse.
func TestCertificateBeyondItsBlock(t *testing.T) {
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	ca := newTestCA(t, csrtest.ECKey(t, elliptic.P256()), pkix.Name{
		Country: []string{"FR", "DE"}, Organization: []string{"Castellan", "Example"},
		OrganizationalUnit: []string{"a", "b", "c", "d"}, Locality: []string{"Paris"}, CommonName: "wide issuer",
	}, nil, testTD.ID().URL(), now.Add(-Backdate), now.Add(365*24*time.Hour))
	if n := len(ca.cert.Subject.Names); n <= blockNameAttrs {
		t.Fatalf("the issuer has %d attributes; the test needs more than %d", n, blockNameAttrs)
	}
	csr, err := ParseWorkloadCSR(testTD, csrtest.WorkloadCSR(t, csrtest.ECKey(t, elliptic.P256())))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := ca.template(t, now, ProfileWorkload, csr, csr.ID, time.Hour)
	built, parsed := certificateBoth(t, ca, tmpl, csr)
	if !reflect.DeepEqual(built, parsed) {
		t.Fatalf("wide issuer: Certificate = %+v\nx509.ParseCertificate = %+v", built, parsed)
	}
	tmpl.URIs = append(tmpl.URIs, &url.URL{Scheme: "spiffe", Host: "example.org", Path: "/two"},
		&url.URL{Scheme: "spiffe", Host: "example.org", Path: "/three"})
	tmpl.ExtKeyUsage = tbs.ExtKeyUsages()
	tmpl.AuthorityKeyId = bytes.Repeat([]byte{0x5a}, 32)
	built, parsed = certificateBoth(t, ca, tmpl, csr)
	if !reflect.DeepEqual(built, parsed) {
		t.Fatalf("large template: Certificate = %+v\nx509.ParseCertificate = %+v", built, parsed)
	}
	if len(built.URIs) != 3 || len(built.ExtKeyUsage) != len(tbs.ExtKeyUsages()) || len(built.AuthorityKeyId) != 32 {
		t.Fatalf("built %d URIs, %d EKUs, a %d-byte key ID", len(built.URIs), len(built.ExtKeyUsage), len(built.AuthorityKeyId))
	}
}

// TestCertificateSlicesDoNotOverlap: the slices Certificate carves out of
// its one allocation are capped, so appending to any of them (and
// discarding the result, which would write past its end if it had room)
// changes nothing else in the certificate.
func TestCertificateSlicesDoNotOverlap(t *testing.T) {
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	ca := castellanCA(t, now)
	csr, err := ParseWorkloadCSR(testTD, csrtest.WorkloadCSR(t, csrtest.ECKey(t, elliptic.P256())))
	if err != nil {
		t.Fatal(err)
	}
	built, parsed := certificateBoth(t, ca, ca.template(t, now, ProfileWorkload, csr, csr.ID, time.Hour), csr)
	if !reflect.DeepEqual(built, parsed) {
		t.Fatalf("Certificate = %+v\nx509.ParseCertificate = %+v", built, parsed)
	}
	_ = append(built.URIs, nil)
	_ = append(built.ExtKeyUsage, x509.ExtKeyUsageAny)
	_ = append(built.AuthorityKeyId, 0xff)
	_ = append(built.Extensions, pkix.Extension{Id: []int{9, 9}})
	for _, e := range built.Extensions {
		_ = append(e.Id, 99)
	}
	_ = append(built.Issuer.Organization, "clobbered")
	_ = append(built.Issuer.OrganizationalUnit, "clobbered")
	_ = append(built.Issuer.Names, pkix.AttributeTypeAndValue{Value: "clobbered"})
	if !reflect.DeepEqual(built, parsed) {
		t.Fatalf("an append to one field changed another:\nbuilt  %+v\nparsed %+v", built, parsed)
	}
}

// TestCertificateSizeCoversTheLeaf: the buffer Create starts with holds
// the whole certificate for every issuer and leaf key type, workload and
// agent profiles alike, so that encoding a leaf allocates it once.
func TestCertificateSizeCoversTheLeaf(t *testing.T) {
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	keys := testLeafKeys(t)
	for in, ca := range testIssuers(t, now) {
		for kn, key := range keys {
			csr, err := ParseWorkloadCSR(testTD, csrtest.WorkloadCSR(t, key))
			if err != nil {
				t.Fatal(err)
			}
			for _, profile := range []string{ProfileWorkload, ProfileAgent} {
				tmpl := ca.template(t, now, profile, csr, csr.ID, time.Hour)
				der, err := Create(tmpl, ca.cert, csr.PublicKey, ca.key)
				if err != nil {
					t.Fatal(err)
				}
				if size := tbs.CertificateSize(tmpl, ca.cert, csr.PublicKey, ca.key.Public()); len(der) > size || cap(der) != size {
					t.Errorf("%s/%s/%s: a %d-byte leaf in a buffer estimated at %d (capacity %d)", in, kn, profile, len(der), size, cap(der))
				}
			}
		}
	}
}
