package leaf

import (
	"bytes"
	"crypto"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"math/big"
	"net"
	"net/url"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/ca/authority/internal/csrtest"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// fuzzKey is one workload key of the pool FuzzLeafTBS draws from, with a
// ready workload CSR over it.
type fuzzKey struct {
	name string
	key  crypto.Signer
	csr  []byte
}

// fuzzIssuer is one intermediate FuzzLeafTBS signs under.
type fuzzIssuer struct {
	name string
	ca   *testCA
}

// fuzzIssuerSpec describes a plugged-in intermediate: its key, its subject
// (RawSubject, when set, is copied verbatim into the certificate) and its
// validity window.
type fuzzIssuerSpec struct {
	name                string
	key                 crypto.Signer
	subject             pkix.Name
	rawSubject          []byte
	notBefore, notAfter time.Time
}

// rawName encodes an RDNSequence whose attribute values are given as raw
// ASN.1 (tag, bytes), so subjects can use string types crypto/x509 never
// produces itself (BMPString, T61String, TeletexString, multi-valued RDNs).
func rawName(t testing.TB, rdns ...[]pkix.AttributeTypeAndValue) []byte {
	t.Helper()
	var seq pkix.RDNSequence
	for _, rdn := range rdns {
		seq = append(seq, pkix.RelativeDistinguishedNameSET(rdn))
	}
	der, err := asn1.Marshal(seq)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func rawValue(tag int, b []byte) asn1.RawValue {
	return asn1.RawValue{Class: asn1.ClassUniversal, Tag: tag, Bytes: b}
}

// bmp encodes s as a BMPString (UTF-16BE, BMP only).
func bmp(s string) []byte {
	var out []byte
	for _, r := range s {
		out = append(out, byte(r>>8), byte(r))
	}
	return out
}

var (
	oidCN = asn1.ObjectIdentifier{2, 5, 4, 3}
	oidO  = asn1.ObjectIdentifier{2, 5, 4, 10}
	oidOU = asn1.ObjectIdentifier{2, 5, 4, 11}
	oidC  = asn1.ObjectIdentifier{2, 5, 4, 6}
)

// fuzzIssuerSpecs are the intermediates: every CA key type the encoder
// supports, PrintableString, UTF8String, BMPString and T61String subjects,
// a multi-valued RDN, and validity windows that cross 1950 and 2050 (the
// UTCTime/GeneralizedTime switch) or end on 9999-12-31.
func fuzzIssuerSpecs(t testing.TB) []fuzzIssuerSpec {
	day := 24 * time.Hour
	return []fuzzIssuerSpec{
		{
			name: "p384-utf8", key: csrtest.ECKey(t, elliptic.P384()),
			subject: pkix.Name{
				Country: []string{"DE"}, Organization: []string{"Zertifizierungsstelle Östliche Mark GmbH"},
				CommonName: "認証局 Intermediate — ü",
			},
			notBefore: time.Date(1949, 6, 1, 0, 0, 0, 0, time.UTC), notAfter: time.Date(2051, 6, 1, 0, 0, 0, 0, time.UTC),
		},
		{
			name: "rsa2048-bmp-t61", key: csrtest.RSAKey(t, 2048),
			rawSubject: rawName(t,
				[]pkix.AttributeTypeAndValue{{Type: oidC, Value: rawValue(asn1.TagPrintableString, []byte("FR"))}},
				[]pkix.AttributeTypeAndValue{ // multi-valued RDN
					{Type: oidO, Value: rawValue(asn1.TagT61String, []byte("Soci\xe9t\xe9 G\xe9n\xe9rale"))},
					{Type: oidOU, Value: rawValue(asn1.TagIA5String, []byte("pki@example.org"))},
				},
				[]pkix.AttributeTypeAndValue{{Type: oidCN, Value: rawValue(asn1.TagBMPString, bmp("Autorité intermédiaire"))}},
			),
			notBefore: time.Date(2049, 12, 1, 0, 0, 0, 0, time.UTC), notAfter: time.Date(2050, 2, 1, 0, 0, 0, 0, time.UTC),
		},
		{
			name: "rsa3072-printable", key: csrtest.RSAKey(t, 3072),
			subject:   pkix.Name{Organization: []string{"Castellan"}, OrganizationalUnit: []string{"example.org"}, CommonName: "Plugged-in RSA CA"},
			notBefore: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC), notAfter: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC).Add(365 * day),
		},
		{
			name: "p256-forever", key: csrtest.ECKey(t, elliptic.P256()),
			subject:   pkix.Name{CommonName: "x"},
			notBefore: time.Date(9800, 1, 1, 0, 0, 0, 0, time.UTC), notAfter: time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC),
		},
	}
}

// fuzzIssuers returns a P-256 intermediate shaped as the CA generates
// one, an intermediate for every spec of fuzzIssuerSpecs, and a copy of
// the last one whose certificate has no SubjectKeyId (so no
// AuthorityKeyId). The order is the corpus's: issuer indexes in
// testdata/fuzz/FuzzLeafTBS pick from this list.
func fuzzIssuers(t testing.TB) []fuzzIssuer {
	t.Helper()
	out := []fuzzIssuer{{"p256-generated", castellanCA(t, time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC))}}
	for _, spec := range fuzzIssuerSpecs(t) {
		out = append(out, fuzzIssuer{spec.name, newTestCA(t, spec.key, spec.subject, spec.rawSubject, nil, spec.notBefore, spec.notAfter)})
	}
	last := *out[len(out)-1].ca
	cert := *last.cert
	cert.SubjectKeyId = nil
	last.cert = &cert
	return append(out, fuzzIssuer{"p256-no-ski", &last})
}

// fuzzKeys is the pool of workload keys: every key type ParseWorkloadCSR
// accepts that the mesh uses.
func fuzzKeys(t testing.TB) []fuzzKey {
	t.Helper()
	keys := []fuzzKey{
		{name: "p256", key: csrtest.ECKey(t, elliptic.P256())},
		{name: "p384", key: csrtest.ECKey(t, elliptic.P384())},
		{name: "rsa2048", key: csrtest.RSAKey(t, 2048)},
		{name: "rsa3072", key: csrtest.RSAKey(t, 3072)},
		{name: "rsa4096", key: csrtest.RSAKey(t, 4096)},
	}
	for i := range keys {
		keys[i].csr = csrtest.WorkloadCSR(t, keys[i].key)
	}
	return keys
}

// fuzzID turns fuzz input into a SPIFFE ID: td and path as given when they
// form a valid ID, else mapped onto the characters SPIFFE IDs allow (so
// the fuzzer spends its time on valid IDs with edge characters), else a
// fixed ID.
func fuzzID(td, path string) spiffeid.ID {
	if id, err := spiffeid.FromString("spiffe://" + td + path); err == nil && id.Path() != "" {
		return id
	}
	const tdChars = "abcdefghijklmnopqrstuvwxyz0123456789.-_"
	const pathChars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_/"
	mapped := func(s, set string) string {
		b := []byte(s)
		for i := range b {
			b[i] = set[int(b[i])%len(set)]
		}
		return string(b)
	}
	if id, err := spiffeid.FromString("spiffe://" + mapped(td, tdChars) + "/" + mapped(path, pathChars)); err == nil {
		return id
	}
	return spiffeid.RequireFromString("spiffe://example.org/ns/default/sa/workload")
}

// fuzzSerial returns a positive serial number of 1 to 20 bytes from b (any
// leading zero bytes fall away; a set high bit makes DER add a 0x00).
func fuzzSerial(b []byte) *big.Int {
	if len(b) > 20 {
		b = b[:20]
	}
	n := new(big.Int).SetBytes(b)
	if n.Sign() == 0 {
		return big.NewInt(1)
	}
	return n
}

// fuzzServerNames returns the DNS and IP SANs SignServer would add, from
// fuzz input: the host of td's ID and a fixed service name; IPv4 from
// the first 4 bytes of b, given both as 4 bytes and in its 16-byte
// IPv4-mapped form (written in 4 bytes either way), and IPv6 from its
// first 16 bytes.
func fuzzServerNames(td string, b []byte) ([]string, []net.IP) {
	dns := []string{fuzzID(td, "/x").TrustDomain().Name(), "castellan-server.castellan.svc"}
	var ips []net.IP
	if len(b) >= net.IPv4len {
		ips = append(ips, net.IP(b[:net.IPv4len]), net.IPv4(b[0], b[1], b[2], b[3]))
	}
	if len(b) >= net.IPv6len {
		ips = append(ips, net.IP(b[:net.IPv6len]))
	}
	return dns, ips
}

// rsaCSRWithSPKITail re-encodes key's workload CSR with data the CSR parser
// tolerates appended to the RSAPublicKey (after it, inside the BIT STRING,
// when inside is false; as an extra element of its SEQUENCE when true) and
// re-signs it, so the CSR still verifies.
func rsaCSRWithSPKITail(t testing.TB, k fuzzKey, tail []byte, inside bool) []byte {
	t.Helper()
	req, err := x509.ParseCertificateRequest(k.csr)
	if err != nil {
		t.Fatal(err)
	}
	pkcs1 := x509.MarshalPKCS1PublicKey(k.key.Public().(*rsa.PublicKey))
	if inside {
		s := cryptobyte.String(pkcs1)
		var body cryptobyte.String
		s.ReadASN1(&body, cbasn1.SEQUENCE)
		var b cryptobyte.Builder
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddBytes(body)
			b.AddASN1OctetString(tail)
		})
		pkcs1 = b.BytesOrPanic()
	} else {
		pkcs1 = append(pkcs1, tail...)
	}
	// CertificationRequestInfo: version, subject, SPKI, [0] attributes.
	cri := cryptobyte.String(req.RawTBSCertificateRequest)
	var body, version, subject cryptobyte.String
	var vTag, sTag cbasn1.Tag
	if !cri.ReadASN1(&body, cbasn1.SEQUENCE) || !body.ReadAnyASN1Element(&version, &vTag) ||
		!body.ReadAnyASN1Element(&subject, &sTag) || !body.SkipASN1(cbasn1.SEQUENCE) {
		t.Fatal("cannot split the CSR's CertificationRequestInfo")
	}
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddBytes(version)
		b.AddBytes(subject)
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddASN1ObjectIdentifier(asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 1})
				b.AddASN1NULL()
			})
			b.AddASN1BitString(pkcs1)
		})
		b.AddBytes(body) // the attributes, with the URI SAN
	})
	tbs := b.BytesOrPanic()
	digest := sha256.Sum256(tbs)
	sig, err := k.key.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	var out cryptobyte.Builder
	out.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddBytes(tbs)
		b.AddBytes(sigSHA256WithRSA.der)
		b.AddASN1BitString(sig)
	})
	return out.BytesOrPanic()
}

// FuzzLeafTBS is the differential test of the hand-written leaf encoder:
// for random serials, SPIFFE IDs, signing times, TTLs, workload keys and
// issuers it builds the leaf template the way Sign does, encodes it with
// Create and with x509.CreateCertificate, and requires byte-identical
// TBSCertificates. Signatures differ (ECDSA is randomised) and are only
// checked to verify.
//
// The workload key reaches the encoder the way Sign passes it: the
// public key of a CSR accepted by ParseWorkloadCSR. For RSA keys, tail
// adds bytes the CSR parser tolerates to the CSR's key encoding (mode%3 ==
// 1: after the RSAPublicKey; 2: inside it). mode&4 picks the agent
// profile. mode&8 adds DNS and IP SANs as SignServer does (see
// fuzzServerNames). off places the signing time within the issuer's
// validity (from an hour before it starts); ttl is taken modulo 290 years.
func FuzzLeafTBS(f *testing.F) {
	issuers := fuzzIssuers(f)
	keys := fuzzKeys(f)
	csrs := make([]*CSR, len(keys))
	for i, k := range keys {
		csr, err := ParseWorkloadCSR(testTD, k.csr)
		if err != nil {
			f.Fatal(err)
		}
		csrs[i] = csr
	}
	hour := int64(time.Hour)
	seed := func(serial []byte, td, path string, off, ttl int64, key, issuer, mode uint8, tail []byte) {
		f.Add(serial, td, path, off, ttl, key, issuer, mode, tail)
	}
	seed([]byte{1}, "example.org", "/ns/default/sa/workload", hour, hour, 0, 0, 0, nil)
	seed([]byte{0x80}, "example.org", "/a", 0, 0, 1, 1, 0, nil)                                                        // high bit: 0x00 pad
	seed([]byte{0, 0, 0x7f}, "td", "/x", 1, 1, 2, 2, 0, nil)                                                           // leading zero bytes
	seed(bytes.Repeat([]byte{0xff}, 20), "a-b_c.d", "/A-Z_a.z/0-9", 5*hour, 24*hour, 3, 3, 0, nil)                     // 20 bytes, top bit
	seed(bytes.Repeat([]byte{0x01}, 21), "x.y", "/...", 1<<62, 1<<62, 4, 4, 0, nil)                                    // clamp to 9999
	seed([]byte{0x42, 0x99}, "example.org", "/ns/default/sa/workload", hour-10*int64(time.Second), hour, 0, 2, 0, nil) // NotBefore clamped to the issuer's
	seed([]byte{9}, "example.org", "/w", 60*24*hour, 10*365*24*hour, 2, 2, 1, []byte{0})                               // RSA, trailing byte
	seed([]byte{9}, "example.org", "/w", 0, hour, 3, 5, 2, []byte("garbage"))                                          // RSA, extra element
	seed([]byte{7}, "example.org", "/w", 10, hour, 0, 5, 0, nil)                                                       // issuer without SKI
	seed([]byte{10, 0, 0, 1}, "castellan.example", "/server", hour, hour, 0, 0, 8|4, nil)                              // server names, IPv4
	seed(bytes.Repeat([]byte{0xfe}, 16), "ca.example", "/server", hour, hour, 2, 3, 8|4, nil)                          // IPv6, RSA issuer

	f.Fuzz(func(t *testing.T, serial []byte, td, path string, off, ttl int64, keyIdx, issuerIdx, mode uint8, tail []byte) {
		in := issuers[int(issuerIdx)%len(issuers)]
		k := int(keyIdx) % len(keys)
		csr := csrs[k]
		if _, isRSA := keys[k].key.(*rsa.PrivateKey); isRSA && mode%3 != 0 && len(tail) > 0 {
			var err error
			csr, err = ParseWorkloadCSR(testTD, rsaCSRWithSPKITail(t, keys[k], tail, mode%3 == 2))
			if err != nil {
				return // the parser refused it; nothing is signed
			}
		}
		signer := in.ca.cert
		// now: from an hour before the issuer's NotBefore to just before
		// its NotAfter, to the nanosecond.
		span := uint64(signer.NotAfter.Sub(signer.NotBefore) + time.Hour)
		now := signer.NotBefore.Add(-time.Hour).Add(time.Duration(uint64(off) % span))
		maxTTL := uint64(290 * 365 * 24 * time.Hour)
		lifetime := time.Duration(uint64(ttl) % maxTTL)
		profile := ProfileWorkload
		if mode&4 != 0 {
			profile = ProfileAgent
		}
		tmpl := in.ca.template(t, now, profile, csr, fuzzID(td, path), lifetime)
		tmpl.SerialNumber = fuzzSerial(serial)
		if mode&8 != 0 {
			tmpl.DNSNames, tmpl.IPAddresses = fuzzServerNames(td, serial)
		}
		compareTBS(t, in, tmpl, csr)
	})
}

// compareTBS encodes tmpl with Create, exactly as Sign does, and with
// x509.CreateCertificate, and fails t unless the TBSCertificates and outer
// signature algorithms are equal byte for byte, our signature verifies
// under the issuer, crypto/x509 parses both certificates alike (it
// refuses some IDs go-spiffe accepts, such as trust domain ".", in both),
// and the certificate Certificate builds without parsing is
// reflect.DeepEqual to crypto/x509's parse of ours.
func compareTBS(t *testing.T, in fuzzIssuer, tmpl *x509.Certificate, csr *CSR) {
	t.Helper()
	der, err := Create(tmpl, in.ca.cert, csr.PublicKey, in.ca.key)
	if err != nil {
		t.Fatalf("Create (issuer %s): %v", in.name, err)
	}
	wantDER, err := x509.CreateCertificate(rand.Reader, tmpl, in.ca.cert, csr.PublicKey, in.ca.key)
	if err != nil {
		t.Fatalf("x509.CreateCertificate (issuer %s): %v", in.name, err)
	}
	tbs, alg, sig := splitCertificate(t, der)
	wantTBS, wantAlg, _ := splitCertificate(t, wantDER)
	if !bytes.Equal(tbs, wantTBS) {
		t.Fatalf("TBSCertificate differs (issuer %s, serial %x, %v..%v, %s):\nours  %x\nx509  %x",
			in.name, tmpl.SerialNumber, tmpl.NotBefore, tmpl.NotAfter, urlString(tmpl.URIs), tbs, wantTBS)
	}
	if !bytes.Equal(alg, wantAlg) {
		t.Fatalf("outer signatureAlgorithm differs: ours %x, x509 %x", alg, wantAlg)
	}
	ours, err := x509.ParseCertificate(der)
	want, wantErr := x509.ParseCertificate(wantDER)
	if (err == nil) != (wantErr == nil) {
		t.Fatalf("crypto/x509 parses ours with %v but its own with %v", err, wantErr)
	}
	if err == nil && !bytes.Equal(ours.RawTBSCertificate, want.RawTBSCertificate) {
		t.Fatal("parsed RawTBSCertificate differs")
	}
	if err == nil && len(tmpl.DNSNames)+len(tmpl.IPAddresses) == 0 {
		// What Sign returns once the trust domain is known to parse.
		alg, aerr := AlgorithmFor(in.ca.key)
		if aerr != nil {
			t.Fatal(aerr)
		}
		built, berr := Certificate(der, tmpl, in.ca.cert, csr.PublicKey, alg)
		if berr != nil || !reflect.DeepEqual(built, ours) {
			t.Fatalf("Certificate (issuer %s) = %v, %+v\nx509.ParseCertificate = %+v", in.name, berr, built, ours)
		}
	}
	if err := in.ca.cert.CheckSignature(x509SigAlg(t, in.ca.key), tbs, sig); err != nil {
		t.Fatalf("our leaf's signature does not verify (issuer %s): %v", in.name, err)
	}
}

// splitCertificate returns the DER TBSCertificate, the DER
// signatureAlgorithm and the signature bits of a certificate.
func splitCertificate(t *testing.T, der []byte) (tbs, alg, sig []byte) {
	t.Helper()
	s := cryptobyte.String(der)
	var body, tbsEl, algEl cryptobyte.String
	var tag cbasn1.Tag
	var bits asn1.BitString
	if !s.ReadASN1(&body, cbasn1.SEQUENCE) || !s.Empty() ||
		!body.ReadAnyASN1Element(&tbsEl, &tag) || tag != cbasn1.SEQUENCE ||
		!body.ReadAnyASN1Element(&algEl, &tag) || tag != cbasn1.SEQUENCE ||
		!body.ReadASN1BitString(&bits) || !body.Empty() || bits.BitLength%8 != 0 {
		t.Fatalf("certificate does not split into TBS, algorithm and signature: %x", der)
	}
	return tbsEl, algEl, bits.Bytes
}

// x509SigAlg names, for crypto/x509, the algorithm AlgorithmFor picks.
func x509SigAlg(t *testing.T, key crypto.Signer) x509.SignatureAlgorithm {
	t.Helper()
	alg, err := AlgorithmFor(key)
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case slices.Equal(alg.oid, oidSigECDSAWithSHA256):
		return x509.ECDSAWithSHA256
	case slices.Equal(alg.oid, oidSigECDSAWithSHA384):
		return x509.ECDSAWithSHA384
	case slices.Equal(alg.oid, oidSigSHA256WithRSA):
		return x509.SHA256WithRSA
	}
	t.Fatalf("no crypto/x509 name for %v", alg.oid)
	return 0
}

func urlString(us []*url.URL) string {
	if len(us) == 0 {
		return ""
	}
	return us[0].String()
}
