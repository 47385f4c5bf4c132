package leaf

import (
	"crypto/elliptic"
	"crypto/x509"
	"net"
	"slices"
	"testing"

	"github.com/castellan-dev/castellan/ca/authority/internal/csrtest"
	"github.com/castellan-dev/castellan/ca/refusal"
)

var knownReasons = []string{
	ReasonMalformedCSR, ReasonBadSignature, ReasonWeakRSAKey, ReasonUnsupportedKey, ReasonNoURISAN,
	ReasonMultipleSANs, ReasonForbiddenSAN, ReasonInvalidSPIFFEID, ReasonWrongTrustDomain, ReasonEmptyPath,
}

// FuzzParseWorkloadCSR checks that parsing never panics, that every
// rejection carries a known reason, and that an accepted CSR really has a
// valid signature and exactly the one allowed SAN.
func FuzzParseWorkloadCSR(f *testing.F) {
	p256 := csrtest.ECKey(f, elliptic.P256())
	valid := csrtest.WorkloadCSR(f, p256)
	f.Add(valid)
	f.Add(csrtest.WorkloadCSR(f, csrtest.ECKey(f, elliptic.P384())))
	f.Add(csrtest.WorkloadCSR(f, csrtest.RSAKey(f, 2048)))
	f.Add(flipLastByte(valid))
	f.Add(valid[:len(valid)-7])
	f.Add(csrtest.CSR(f, p256, csrtest.Spec{URIs: []string{"spiffe://example.org/a", "spiffe://example.org/b"}}))
	f.Add(csrtest.CSR(f, p256, csrtest.Spec{URIs: []string{"spiffe://other.org/a"}}))
	f.Add(csrtest.CSR(f, p256, csrtest.Spec{URIs: []string{"spiffe://example.org"}}))
	f.Add(csrtest.CSR(f, p256, csrtest.Spec{URIs: []string{"spiffe://example.org/a"}, DNS: []string{"a"}, IPs: []net.IP{net.IPv6loopback}}))
	f.Add(csrtest.WorkloadCSR(f, csrtest.ECKey(f, elliptic.P224())))
	f.Add([]byte{})
	f.Add([]byte{0x30, 0x80, 0x00, 0x00})

	f.Fuzz(func(t *testing.T, der []byte) {
		csr, err := ParseWorkloadCSR(testTD, der)
		if err != nil {
			if r := refusal.ReasonOf(err); !slices.Contains(knownReasons, r) {
				t.Fatalf("rejection with unknown reason %q: %v", r, err)
			}
			return
		}
		req, perr := x509.ParseCertificateRequest(der)
		if perr != nil {
			t.Fatalf("accepted a CSR that does not parse: %v", perr)
		}
		if serr := req.CheckSignature(); serr != nil {
			t.Fatalf("accepted a CSR whose signature does not verify: %v", serr)
		}
		if len(req.URIs) != 1 || len(req.DNSNames)+len(req.IPAddresses)+len(req.EmailAddresses) != 0 {
			t.Fatalf("accepted a CSR with SANs %v %v %v %v", req.URIs, req.DNSNames, req.IPAddresses, req.EmailAddresses)
		}
		if !csr.ID.MemberOf(testTD) || csr.ID.Path() == "" || csr.ID.String() != req.URIs[0].String() {
			t.Fatalf("accepted ID %q from URI %q", csr.ID, req.URIs[0])
		}
	})
}
