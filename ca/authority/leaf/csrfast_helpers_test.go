package leaf

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"net/url"
	"reflect"
	"regexp"
	"slices"
	"testing"

	"github.com/castellan-dev/castellan/ca/authority/internal/csrtest"
	"github.com/castellan-dev/castellan/ca/authority/leaf/csrparse"
	"github.com/castellan-dev/castellan/ca/refusal"
	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// The differential tests of the fast CSR parser (csrfast.go) build requests
// piece by piece, to put a surprise in any one place and still sign them
// properly, so that the signature verdict is compared too.

// csrParts are the pieces of a hand-made request. Each is a whole DER
// element except attrs, the contents of the [0] attributes field.
type csrParts struct {
	version, subject, spki, attrs, afterInfo []byte
	alg                                      []byte // AlgorithmIdentifier element
	hash                                     crypto.Hash
	sigTail, tail                            []byte // inside the outer SEQUENCE after the signature; after it
}

// el encodes one DER element with tag and contents.
func el(tag cbasn1.Tag, contents ...[]byte) []byte {
	var b cryptobyte.Builder
	b.AddASN1(tag, func(b *cryptobyte.Builder) {
		for _, c := range contents {
			b.AddBytes(c)
		}
	})
	return b.BytesOrPanic()
}

// oidEl encodes an OBJECT IDENTIFIER element.
func oidEl(oid ...int) []byte {
	der, err := asn1.Marshal(asn1.ObjectIdentifier(oid))
	if err != nil {
		panic(err)
	}
	return der
}

// cat concatenates byte slices.
func cat(parts ...[]byte) []byte { return slices.Concat(parts...) }

// Encoded elements the hand-made requests use.
var (
	elSHA256     = el(cbasn1.SEQUENCE, oidEl(1, 2, 840, 10045, 4, 3, 2))
	elSHA384     = el(cbasn1.SEQUENCE, oidEl(1, 2, 840, 10045, 4, 3, 3))
	elSHA512     = el(cbasn1.SEQUENCE, oidEl(1, 2, 840, 10045, 4, 3, 4))
	elExtReqOID  = oidEl(1, 2, 840, 113549, 1, 9, 14)
	elSANOID     = oidEl(2, 5, 29, 17)
	elCriticalT  = []byte{0x01, 0x01, 0xff}
	elCriticalF  = []byte{0x01, 0x01, 0x00}
	emptySubject = []byte{0x30, 0x00}
)

// gn encodes a GeneralName of context tag n with value v.
func gn(n uint8, v string) []byte { return el(cbasn1.Tag(n).ContextSpecific(), []byte(v)) }

// sanExt encodes a subjectAltName Extension holding names, with the given
// critical element (nil for none).
func sanExt(critical []byte, names ...[]byte) []byte {
	return el(cbasn1.SEQUENCE, elSANOID, critical, el(cbasn1.OCTET_STRING, el(cbasn1.SEQUENCE, names...)))
}

// extReq encodes an extensionRequest attribute whose SET holds values
// (each an Extensions SEQUENCE).
func extReq(values ...[]byte) []byte {
	return el(cbasn1.SEQUENCE, elExtReqOID, el(cbasn1.SET, values...))
}

// exts encodes an Extensions SEQUENCE.
func exts(e ...[]byte) []byte { return el(cbasn1.SEQUENCE, e...) }

// uriSAN is the attributes content asking for one URI SAN, as
// x509.CreateCertificateRequest encodes it.
func uriSAN(uri string) []byte { return extReq(exts(sanExt(nil, gn(6, uri)))) }

// defaultParts returns the pieces of a workload CSR over key, as
// x509.CreateCertificateRequest would encode them.
func defaultParts(t testing.TB, key *ecdsa.PrivateKey) csrParts {
	t.Helper()
	spki, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	p := csrParts{version: []byte{0x02, 0x01, 0x00}, subject: emptySubject, spki: spki,
		attrs: uriSAN(csrtest.WorkloadID), alg: elSHA256, hash: crypto.SHA256}
	if key.Curve == elliptic.P384() {
		p.alg, p.hash = elSHA384, crypto.SHA384
	}
	return p
}

// build encodes and signs p with key.
func (p csrParts) build(t testing.TB, key crypto.Signer) []byte {
	t.Helper()
	info := el(cbasn1.SEQUENCE, p.version, p.subject, p.spki,
		el(cbasn1.Tag(0).Constructed().ContextSpecific(), p.attrs), p.afterInfo)
	h := p.hash.New()
	h.Write(info)
	sig, err := key.Sign(rand.Reader, h.Sum(nil), p.hash)
	if err != nil {
		t.Fatal(err)
	}
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddBytes(info)
		b.AddBytes(p.alg)
		b.AddASN1BitString(sig)
		b.AddBytes(p.sigTail)
	})
	return cat(b.BytesOrPanic(), p.tail)
}

// x509CSR returns what x509.CreateCertificateRequest makes of tmpl and key.
func x509CSR(t testing.TB, key crypto.Signer, tmpl *x509.CertificateRequest) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// uris parses URI strings for a template.
func uris(t testing.TB, ss ...string) []*url.URL {
	t.Helper()
	var out []*url.URL
	for _, s := range ss {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, u)
	}
	return out
}

// subjectOf encodes name as a subject element.
func subjectOf(t testing.TB, name pkix.RDNSequence) []byte {
	t.Helper()
	der, err := asn1.Marshal(name)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// compareWithX509 checks parseFastCSR against crypto/x509 on der and
// reports whether the fast parser accepted it. Where it accepts,
// x509.ParseCertificateRequest must accept too and agree on every field the
// CA uses and on the signature verdict, down to the error's text.
func compareWithX509(t testing.TB, der []byte) bool {
	t.Helper()
	fast, ok := csrparse.ParseFast(der)
	if !ok {
		return false
	}
	ref, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatalf("fast parser accepted what crypto/x509 refuses (%v): %x", err, der)
	}
	pub, isEC := ref.PublicKey.(*ecdsa.PublicKey)
	switch {
	case !isEC || !pub.Equal(fast.PublicKey):
		t.Fatalf("public key %v, crypto/x509 %v", fast.PublicKey, ref.PublicKey)
	case !slices.Equal(fast.RawSubjectPublicKeyInfo, ref.RawSubjectPublicKeyInfo):
		t.Fatalf("SubjectPublicKeyInfo %x, crypto/x509 %x", fast.RawSubjectPublicKeyInfo, ref.RawSubjectPublicKeyInfo)
	case !reflect.DeepEqual(fast.URIs, ref.URIs):
		t.Fatalf("URIs %v, crypto/x509 %v", fast.URIs, ref.URIs)
	case fast.DNSNames != len(ref.DNSNames) || fast.IPAddresses != len(ref.IPAddresses) || fast.EmailAddresses != len(ref.EmailAddresses):
		t.Fatalf("DNS/IP/e-mail SANs %d/%d/%d, crypto/x509 %v/%v/%v", fast.DNSNames, fast.IPAddresses, fast.EmailAddresses,
			ref.DNSNames, ref.IPAddresses, ref.EmailAddresses)
	case fast.SignatureAlgorithm != ref.SignatureAlgorithm:
		t.Fatalf("signature algorithm %v, crypto/x509 %v", fast.SignatureAlgorithm, ref.SignatureAlgorithm)
	case !slices.Equal(fast.RawTBSCertificateRequest, ref.RawTBSCertificateRequest) || !slices.Equal(fast.Signature, ref.Signature):
		t.Fatalf("signed bytes or signature differ from crypto/x509's")
	}
	if fe, xe := fast.CheckSignature(), ref.CheckSignature(); errText(fe) != errText(xe) {
		t.Fatalf("signature verdict %v, crypto/x509 %v", fe, xe)
	}
	return true
}

// comparePipelines checks that ParseWorkloadCSR and ParseAgentCSR give the
// same result with the fast parser first as with crypto/x509 alone: the
// same refusal (reason and message), or the same ID and key.
func comparePipelines(t testing.TB, der []byte) {
	t.Helper()
	w1, e1 := parseWorkloadCSR(testTD, der, csrparse.Parse)
	w2, e2 := parseWorkloadCSR(testTD, der, csrparse.ParseX509)
	sameOutcome(t, "workload", w1, e1, w2, e2)
	a1, e1 := parseAgentCSR(der, csrparse.Parse)
	a2, e2 := parseAgentCSR(der, csrparse.ParseX509)
	sameOutcome(t, "agent", a1, e1, a2, e2)
}

// sameOutcome fails t unless the two results are equal.
func sameOutcome(t testing.TB, what string, c1 *CSR, e1 error, c2 *CSR, e2 error) {
	t.Helper()
	if !sameText(e1, e2) || refusal.ReasonOf(e1) != refusal.ReasonOf(e2) {
		t.Fatalf("%s: fast path error %v (reason %q), crypto/x509 %v (reason %q)",
			what, e1, refusal.ReasonOf(e1), e2, refusal.ReasonOf(e2))
	}
	if e1 != nil {
		var r *refusal.Error
		if !errors.As(e1, &r) {
			t.Fatalf("%s: error %v is not a refusal", what, e1)
		}
		return
	}
	if c1.ID != c2.ID || !csrtest.PublicKeyEqual(c1.PublicKey, c2.PublicKey) ||
		!slices.Equal(c1.RawSubjectPublicKeyInfo, c2.RawSubjectPublicKeyInfo) {
		t.Fatalf("%s: fast path %+v, crypto/x509 %+v", what, c1, c2)
	}
}

// errText is err's message, "" for nil.
func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// pointers matches the addresses encoding/asn1 prints in some errors
// ("tag:0xc000123456"), which differ from one call to the next.
var pointers = regexp.MustCompile(`0x[0-9a-f]{6,}`)

// sameText reports whether two errors read the same, addresses aside.
func sameText(a, b error) bool {
	return pointers.ReplaceAllString(errText(a), "0x?") == pointers.ReplaceAllString(errText(b), "0x?")
}
