package leaf

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"net"
	"strings"
	"testing"

	"github.com/castellan-dev/castellan/ca/authority/internal/csrtest"
	"github.com/castellan-dev/castellan/ca/authority/leaf/csrparse"
	"github.com/castellan-dev/castellan/ca/refusal"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// csrCase is one request of the differential test and whether the fast
// parser must read it (true) or leave it to crypto/x509 (false).
type csrCase struct {
	name string
	der  []byte
	fast bool
}

// fastCSRCases are requests of the shape the fast parser reads: from
// x509.CreateCertificateRequest with P-256 and P-384 keys and several SANs
// and subjects, and hand-made ones.
func fastCSRCases(t testing.TB) []csrCase {
	p256, p384 := csrtest.ECKey(t, elliptic.P256()), csrtest.ECKey(t, elliptic.P384())
	long := "spiffe://example.org/" + strings.Repeat("a/", 150) + "x" // > 255 bytes: two-byte lengths
	mid := "spiffe://example.org/ns/" + strings.Repeat("m", 110)      // 128..255 bytes
	p := func(key *ecdsa.PrivateKey, edit func(*csrParts)) []byte {
		parts := defaultParts(t, key)
		edit(&parts)
		return parts.build(t, key)
	}
	valid := csrtest.WorkloadCSR(t, p256)
	return []csrCase{
		{"P-256", valid, true},
		{"P-384", csrtest.WorkloadCSR(t, p384), true},
		{"P-256 signed with SHA-384", x509CSR(t, p256, &x509.CertificateRequest{URIs: uris(t, csrtest.WorkloadID), SignatureAlgorithm: x509.ECDSAWithSHA384}), true},
		{"P-384 signed with SHA-256", x509CSR(t, p384, &x509.CertificateRequest{URIs: uris(t, csrtest.WorkloadID), SignatureAlgorithm: x509.ECDSAWithSHA256}), true},
		{"agent shape, no SAN", x509CSR(t, p256, &x509.CertificateRequest{}), true},
		{"ID of 128-255 bytes", csrtest.CSR(t, p256, csrtest.Spec{URIs: []string{mid}}), true},
		{"ID over 255 bytes", csrtest.CSR(t, p384, csrtest.Spec{URIs: []string{long}}), true},
		{"two URI SANs", csrtest.CSR(t, p256, csrtest.Spec{URIs: []string{csrtest.WorkloadID, "spiffe://example.org/b"}}), true},
		{"DNS, IP and e-mail SANs", csrtest.CSR(t, p256, csrtest.Spec{URIs: []string{csrtest.WorkloadID}, DNS: []string{"a.example", "b"},
			IPs: []net.IP{net.IPv4(10, 0, 0, 1), net.IPv6loopback}, Emails: []string{"a@example.org"}}), true},
		{"other trust domain", csrtest.CSR(t, p256, csrtest.Spec{URIs: []string{"spiffe://evil.org/x"}}), true},
		{"not a SPIFFE ID", csrtest.CSR(t, p256, csrtest.Spec{URIs: []string{"https://example.org/x"}}), true},
		{"URI without host", csrtest.CSR(t, p256, csrtest.Spec{URIs: []string{"urn:example:x"}}), true},
		{"trust domain only", csrtest.CSR(t, p256, csrtest.Spec{URIs: []string{"spiffe://example.org"}}), true},
		{"dot segment", csrtest.CSR(t, p256, csrtest.Spec{URIs: []string{"spiffe://example.org/a/../b"}}), true},
		{"subject CN and O", x509CSR(t, p256, &x509.CertificateRequest{URIs: uris(t, csrtest.WorkloadID),
			Subject: pkix.Name{CommonName: "workload (1)", Organization: []string{"Acme, Inc."}, Country: []string{"US"}}}), true},
		{"subject UTF8String", x509CSR(t, p384, &x509.CertificateRequest{URIs: uris(t, csrtest.WorkloadID),
			Subject: pkix.Name{CommonName: "Zürich*"}}), true},
		{"critical SAN", x509CSR(t, p256, &x509.CertificateRequest{ExtraExtensions: []pkix.Extension{
			{Id: asn1.ObjectIdentifier{2, 5, 29, 17}, Critical: true, Value: el(cbasn1.SEQUENCE, gn(6, csrtest.WorkloadID))}}}), true},
		{"Istio-like: O=trust domain, SAN from ExtraExtensions", x509CSR(t, p256, &x509.CertificateRequest{
			Subject: pkix.Name{Organization: []string{"cluster.local"}}, ExtraExtensions: []pkix.Extension{
				{Id: asn1.ObjectIdentifier{2, 5, 29, 17}, Value: el(cbasn1.SEQUENCE, gn(6, csrtest.WorkloadID))}}}), true},
		{"empty O", x509CSR(t, p256, &x509.CertificateRequest{URIs: uris(t, csrtest.WorkloadID), Subject: pkix.Name{Organization: []string{""}}}), true},
		{"empty extension list", p(p256, func(c *csrParts) { c.attrs = extReq(exts()) }), true},
		{"empty SAN", p(p256, func(c *csrParts) { c.attrs = extReq(exts(sanExt(nil))) }), true},
		{"tampered signature", flipLastByte(valid), true},
		{"tampered SAN", bytes.Replace(valid, []byte("workload"), []byte("workloae"), 1), true},
		{"empty signature", withSignature(t, valid, nil), true},
		{"signature not DER", withSignature(t, valid, []byte{0x30, 0x80, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01, 0, 0}), true},
		{"signed by another key", withSignature(t, valid, sigOf(t, csrtest.WorkloadCSR(t, csrtest.ECKey(t, elliptic.P256())))), true},
		{"URI with user (host checked as crypto/x509 does)", p(p256, func(c *csrParts) { c.attrs = uriSAN("spiffe://u@example.org/x") }), true},
		{"P-384 key, SHA-256 OID, SHA-384 signature", p(p384, func(c *csrParts) { c.alg = elSHA256 }), true},
	}
}

// x509OnlyCSRCases are requests the fast parser must leave to crypto/x509,
// which accepts some and refuses others.
func x509OnlyCSRCases(t testing.TB) []csrCase {
	p256, p384 := csrtest.ECKey(t, elliptic.P256()), csrtest.ECKey(t, elliptic.P384())
	p := func(key *ecdsa.PrivateKey, edit func(*csrParts)) []byte {
		parts := defaultParts(t, key)
		edit(&parts)
		return parts.build(t, key)
	}
	valid := csrtest.WorkloadCSR(t, p256)
	san := sanExt(nil, gn(6, csrtest.WorkloadID))
	return []csrCase{
		{"RSA 2048", csrtest.WorkloadCSR(t, csrtest.RSAKey(t, 2048)), false},
		{"P-224", csrtest.WorkloadCSR(t, csrtest.ECKey(t, elliptic.P224())), false},
		{"P-521", csrtest.WorkloadCSR(t, csrtest.ECKey(t, elliptic.P521())), false},
		{"empty", nil, false},
		{"garbage", []byte("not a certificate request"), false},
		{"truncated", valid[:len(valid)-1], false},
		{"truncated header", valid[:1], false},
		{"trailing byte", cat(valid, []byte{0}), false},
		{"trailing element", p(p256, func(c *csrParts) { c.tail = []byte{0x05, 0x00} }), false},
		{"element after attributes", p(p256, func(c *csrParts) { c.afterInfo = []byte{0x05, 0x00} }), false},
		{"element after signature", p(p256, func(c *csrParts) { c.sigTail = []byte{0x05, 0x00} }), false},
		{"indefinite length", cat([]byte{0x30, 0x80}, valid[2:], []byte{0, 0}), false},
		{"non-minimal length", nonMinimalLength(t, valid), false},
		{"non-minimal length in subject", p(p256, func(c *csrParts) { c.subject = []byte{0x30, 0x81, 0x00} }), false},
		{"non-minimal length in SAN", p(p256, func(c *csrParts) {
			uri := gn(6, csrtest.WorkloadID)
			c.attrs = extReq(exts(el(cbasn1.SEQUENCE, elSANOID, el(cbasn1.OCTET_STRING, []byte{0x30, 0x81, byte(len(uri))}, uri))))
		}), false},
		{"version 1", p(p256, func(c *csrParts) { c.version = []byte{0x02, 0x01, 0x01} }), false},
		{"version non-minimal", p(p256, func(c *csrParts) { c.version = []byte{0x02, 0x02, 0x00, 0x00} }), false},
		{"no attributes field", noAttributes(t, p256), false},
		{"ecdsa-with-SHA512", p(p256, func(c *csrParts) { c.alg, c.hash = elSHA512, crypto.SHA512 }), false},
		{"algorithm with NULL parameters", p(p256, func(c *csrParts) { c.alg = el(cbasn1.SEQUENCE, oidEl(1, 2, 840, 10045, 4, 3, 2), []byte{5, 0}) }), false},
		{"unknown algorithm", p(p256, func(c *csrParts) { c.alg = el(cbasn1.SEQUENCE, oidEl(1, 2, 3)) }), false},
		{"duplicate SAN extensions", p(p256, func(c *csrParts) { c.attrs = extReq(exts(san, san)) }), false},
		{"two extensionRequests", p(p256, func(c *csrParts) { c.attrs = cat(uriSAN(csrtest.WorkloadID), uriSAN("spiffe://example.org/b")) }), false},
		{"extensionRequest with two values", p(p256, func(c *csrParts) { c.attrs = extReq(exts(san), exts(sanExt(nil, gn(6, "spiffe://evil.org/x")))) }), false},
		{"extensionRequest with no value", p(p256, func(c *csrParts) { c.attrs = extReq() }), false},
		{"challengePassword attribute", p(p256, func(c *csrParts) { c.attrs = cat(challengePassword(), uriSAN(csrtest.WorkloadID)) }), false},
		{"unparsable attribute", p(p256, func(c *csrParts) { c.attrs = cat(uriSAN(csrtest.WorkloadID), []byte{0x04, 0x01, 0x00}) }), false},
		{"another extension", p(p256, func(c *csrParts) { c.attrs = extReq(exts(san, keyUsageExt())) }), false},
		{"SAN critical FALSE", p(p256, func(c *csrParts) { c.attrs = extReq(exts(sanExt(elCriticalF, gn(6, csrtest.WorkloadID)))) }), false},
		{"SAN critical TRUE, second SAN", p(p256, func(c *csrParts) { c.attrs = extReq(exts(sanExt(elCriticalT, gn(6, csrtest.WorkloadID)), san)) }), false},
		{"SAN otherName", p(p256, func(c *csrParts) {
			c.attrs = extReq(exts(sanExt(nil, gn(6, csrtest.WorkloadID), el(cbasn1.Tag(0).Constructed().ContextSpecific(), oidEl(1, 2, 3), []byte{0xa0, 0x02, 0x05, 0x00}))))
		}), false},
		{"SAN constructed URI", p(p256, func(c *csrParts) {
			c.attrs = extReq(exts(sanExt(nil, el(cbasn1.Tag(6).Constructed().ContextSpecific(), el(cbasn1.IA5String, []byte(csrtest.WorkloadID))))))
		}), false},
		{"SAN bytes after names", p(p256, func(c *csrParts) {
			c.attrs = extReq(exts(el(cbasn1.SEQUENCE, elSANOID, el(cbasn1.OCTET_STRING, el(cbasn1.SEQUENCE, gn(6, csrtest.WorkloadID)), []byte{5, 0}))))
		}), false},
		{"URI empty label", p(p256, func(c *csrParts) { c.attrs = uriSAN("spiffe://example..org/x") }), false},
		{"URI trailing dot", p(p256, func(c *csrParts) { c.attrs = uriSAN("spiffe://example.org./x") }), false},
		{"URI upper case host", p(p256, func(c *csrParts) { c.attrs = uriSAN("spiffe://Example.org/x") }), false},
		{"URI with port", p(p256, func(c *csrParts) { c.attrs = uriSAN("spiffe://example.org:443/x") }), false},
		{"URI not ASCII", p(p256, func(c *csrParts) { c.attrs = uriSAN("spiffe://example.org/\xc3\xa9") }), false},
		{"URI unparsable", p(p256, func(c *csrParts) { c.attrs = uriSAN("spiffe://example.org/%zz") }), false},
		{"DNS not ASCII", p(p256, func(c *csrParts) { c.attrs = extReq(exts(sanExt(nil, gn(6, csrtest.WorkloadID), gn(2, "\xff")))) }), false},
		{"IP of 5 bytes", p(p256, func(c *csrParts) { c.attrs = extReq(exts(sanExt(nil, gn(6, csrtest.WorkloadID), gn(7, "12345")))) }), false},
		{"compressed point", p(p256, func(c *csrParts) { c.spki = compressedSPKI(t, p256) }), false},
		{"point not on curve", p(p256, func(c *csrParts) { c.spki = bytes.Clone(c.spki); c.spki[len(c.spki)-1] ^= 1 }), false},
		{"P-384 OID, P-256 point", p(p256, func(c *csrParts) {
			c.spki = bytes.Replace(c.spki, oidEl(1, 2, 840, 10045, 3, 1, 7), oidEl(1, 3, 132, 0, 34), 1)
		}), false},
		{"key with unused bits", p(p256, func(c *csrParts) {
			c.spki = bytes.Clone(c.spki)
			c.spki[len(c.spki)-66] = 1
			c.spki[len(c.spki)-1] &^= 1
		}), false},
		{"subject IA5String", p(p256, func(c *csrParts) { c.subject = rawSubject(cbasn1.IA5String, "x") }), false},
		{"subject asterisk", p(p384, func(c *csrParts) { c.subject = rawSubject(cbasn1.PrintableString, "*.example") }), false},
		{"subject bad PrintableString", p(p256, func(c *csrParts) { c.subject = rawSubject(cbasn1.PrintableString, "a@b") }), false},
		{"subject bad UTF-8", p(p256, func(c *csrParts) { c.subject = rawSubject(cbasn1.UTF8String, "\xff") }), false},
		{"subject multi-valued RDN", p(p256, func(c *csrParts) {
			c.subject = subjectOf(t, pkix.RDNSequence{{{Type: asn1.ObjectIdentifier{2, 5, 4, 3}, Value: "a"}, {Type: asn1.ObjectIdentifier{2, 5, 4, 10}, Value: "b"}}})
		}), false},
		{"subject other attribute", p(p256, func(c *csrParts) {
			c.subject = subjectOf(t, pkix.RDNSequence{{{Type: asn1.ObjectIdentifier{0, 9, 2342, 19200300, 100, 1, 25}, Value: "org"}}})
		}), false},
		{"subject trailing data", p(p256, func(c *csrParts) { c.subject = el(cbasn1.SEQUENCE, []byte{0x31, 0x00}) }), false},
	}
}

// nonMinimalLength re-encodes der's outer length in a longer form than
// needed.
func nonMinimalLength(t testing.TB, der []byte) []byte {
	t.Helper()
	if der[1] != 0x81 && der[1] != 0x82 {
		t.Fatalf("unexpected length form %x", der[:3])
	}
	n := int(der[1] & 0x7f)
	length := der[2 : 2+n]
	return cat([]byte{0x30, 0x83}, make([]byte, 3-n), length, der[2+n:])
}

// noAttributes signs a CertificationRequestInfo without its [0] field.
func noAttributes(t testing.TB, key *ecdsa.PrivateKey) []byte {
	t.Helper()
	der := defaultParts(t, key).build(t, key)
	var r rawCSR
	if _, err := asn1.Unmarshal(der, &r); err != nil {
		t.Fatal(err)
	}
	body := r.TBS.Bytes
	i := bytes.LastIndex(body, []byte{0xa0})
	info := el(cbasn1.SEQUENCE, body[:i])
	sig, err := key.Sign(rand.Reader, sha256Of(info), crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	return el(cbasn1.SEQUENCE, info, elSHA256, el(cbasn1.BIT_STRING, []byte{0}, sig))
}

// challengePassword encodes a PKCS#9 challengePassword attribute.
func challengePassword() []byte {
	return el(cbasn1.SEQUENCE, oidEl(1, 2, 840, 113549, 1, 9, 7), el(cbasn1.SET, el(cbasn1.PrintableString, []byte("secret"))))
}

// keyUsageExt encodes a critical keyUsage extension (digitalSignature).
func keyUsageExt() []byte {
	return el(cbasn1.SEQUENCE, oidEl(2, 5, 29, 15), elCriticalT, el(cbasn1.OCTET_STRING, []byte{0x03, 0x02, 0x07, 0x80}))
}

// rawSubject encodes a subject of one common name with value v of the
// given string type.
func rawSubject(tag cbasn1.Tag, v string) []byte {
	return el(cbasn1.SEQUENCE, el(cbasn1.SET, el(cbasn1.SEQUENCE, oidEl(2, 5, 4, 3), el(tag, []byte(v)))))
}

// compressedSPKI encodes key's SubjectPublicKeyInfo with a compressed point.
func compressedSPKI(t testing.TB, key *ecdsa.PrivateKey) []byte {
	t.Helper()
	spki, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	x, y := spki[len(spki)-64:len(spki)-32], spki[len(spki)-32:] // P-256: 04 || X || Y at the end
	point := cat([]byte{2 | y[31]&1}, x)
	alg := el(cbasn1.SEQUENCE, oidEl(1, 2, 840, 10045, 2, 1), oidEl(1, 2, 840, 10045, 3, 1, 7))
	return el(cbasn1.SEQUENCE, alg, el(cbasn1.BIT_STRING, []byte{0}, point))
}

// sha256Of is the SHA-256 digest of b.
func sha256Of(b []byte) []byte {
	h := crypto.SHA256.New()
	h.Write(b)
	return h.Sum(nil)
}

// TestFastCSRMatchesX509 runs every hand-made case through both parsers:
// the fast one reads exactly the cases marked fast, agrees with
// crypto/x509 on each of them, and ParseWorkloadCSR and ParseAgentCSR give
// the same ID, key or refusal (reason and message) with and without it.
func TestFastCSRMatchesX509(t *testing.T) {
	for _, c := range append(fastCSRCases(t), x509OnlyCSRCases(t)...) {
		t.Run(c.name, func(t *testing.T) {
			if got := compareWithX509(t, c.der); got != c.fast {
				t.Fatalf("fast parser accepted = %v, want %v", got, c.fast)
			}
			comparePipelines(t, c.der)
		})
	}
}

// TestFallbackToX509 proves that requests the fast parser declines still
// get crypto/x509's verdict through ParseWorkloadCSR: an RSA request and
// one carrying an unusual attribute are accepted; an extra element after
// the attributes is tolerated by crypto/x509 and so still accepted; a
// duplicate SAN extension is refused with crypto/x509's reason.
func TestFallbackToX509(t *testing.T) {
	p256 := csrtest.ECKey(t, elliptic.P256())
	withAttr := defaultParts(t, p256)
	withAttr.attrs = cat(challengePassword(), withAttr.attrs)
	extra := defaultParts(t, p256)
	extra.afterInfo = []byte{0x05, 0x00}
	dup := defaultParts(t, p256)
	san := sanExt(nil, gn(6, csrtest.WorkloadID))
	dup.attrs = extReq(exts(san, san))
	for _, tt := range []struct {
		name   string
		der    []byte
		reason string
	}{
		{"RSA 2048", csrtest.WorkloadCSR(t, csrtest.RSAKey(t, 2048)), ""},
		{"challengePassword", withAttr.build(t, p256), ""},
		{"element after attributes", extra.build(t, p256), ""},
		{"duplicate SAN", dup.build(t, p256), ReasonMalformedCSR},
		{"RSA 1024", csrtest.WorkloadCSR(t, csrtest.RSAKey(t, 1024)), ReasonWeakRSAKey},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, ok := csrparse.ParseFast(tt.der); ok {
				t.Fatal("the fast parser read it; the test proves nothing")
			}
			csr, err := ParseWorkloadCSR(testTD, tt.der)
			if got := refusal.ReasonOf(err); got != tt.reason {
				t.Fatalf("reason %q (%v), want %q", got, err, tt.reason)
			}
			if err == nil && csr.ID.String() != csrtest.WorkloadID {
				t.Fatalf("ID %v", csr.ID)
			}
		})
	}
}

// TestFastCSRBadSignatureRefusal checks the refusal of a request the fast
// parser reads whose signature does not verify, word for word.
func TestFastCSRBadSignatureRefusal(t *testing.T) {
	der := flipLastByte(csrtest.WorkloadCSR(t, csrtest.ECKey(t, elliptic.P256())))
	if _, ok := csrparse.ParseFast(der); !ok {
		t.Fatal("the fast parser declined it; the test proves nothing")
	}
	_, err := ParseWorkloadCSR(testTD, der)
	const want = "authority: CSR signature does not verify with its public key: x509: ECDSA verification failure"
	if refusal.ReasonOf(err) != ReasonBadSignature || errText(err) != want {
		t.Fatalf("error %q (reason %q), want %q", errText(err), refusal.ReasonOf(err), want)
	}
}
