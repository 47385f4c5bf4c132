// Package tbs writes the TBSCertificate of an X.509-SVID leaf, as
// crypto/x509's CreateCertificate lays it out for the templates
// ca/authority/leaf builds, with a der.Writer into the buffer of the whole
// certificate. ca/authority/leaf's FuzzLeafTBS proves the bytes equal to
// crypto/x509's.
package tbs

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"fmt"
	"net"
	"slices"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"

	"github.com/castellan-dev/castellan/ca/authority/leaf/internal/der"
)

// Object identifiers of the extensions and public keys the leaf carries
// (RFC 5280, RFC 5480).
var (
	oidExtKeyUsage         = []int{2, 5, 29, 15}
	oidExtExtKeyUsage      = []int{2, 5, 29, 37}
	oidExtBasicConstraints = []int{2, 5, 29, 19}
	oidExtAuthorityKeyID   = []int{2, 5, 29, 35}
	oidExtSubjectAltName   = []int{2, 5, 29, 17}

	oidPublicKeyECDSA = []int{1, 2, 840, 10045, 2, 1}
	oidCurveP256      = []int{1, 2, 840, 10045, 3, 1, 7}
	oidCurveP384      = []int{1, 3, 132, 0, 34}
)

// ekuOIDs maps the extended key usages a cfssl profile can name to their
// OIDs, as crypto/x509 encodes them.
var ekuOIDs = map[x509.ExtKeyUsage][]int{
	x509.ExtKeyUsageAny:                            {2, 5, 29, 37, 0},
	x509.ExtKeyUsageServerAuth:                     {1, 3, 6, 1, 5, 5, 7, 3, 1},
	x509.ExtKeyUsageClientAuth:                     {1, 3, 6, 1, 5, 5, 7, 3, 2},
	x509.ExtKeyUsageCodeSigning:                    {1, 3, 6, 1, 5, 5, 7, 3, 3},
	x509.ExtKeyUsageEmailProtection:                {1, 3, 6, 1, 5, 5, 7, 3, 4},
	x509.ExtKeyUsageIPSECEndSystem:                 {1, 3, 6, 1, 5, 5, 7, 3, 5},
	x509.ExtKeyUsageIPSECTunnel:                    {1, 3, 6, 1, 5, 5, 7, 3, 6},
	x509.ExtKeyUsageIPSECUser:                      {1, 3, 6, 1, 5, 5, 7, 3, 7},
	x509.ExtKeyUsageTimeStamping:                   {1, 3, 6, 1, 5, 5, 7, 3, 8},
	x509.ExtKeyUsageOCSPSigning:                    {1, 3, 6, 1, 5, 5, 7, 3, 9},
	x509.ExtKeyUsageMicrosoftServerGatedCrypto:     {1, 3, 6, 1, 4, 1, 311, 10, 3, 3},
	x509.ExtKeyUsageNetscapeServerGatedCrypto:      {2, 16, 840, 1, 113730, 4, 1},
	x509.ExtKeyUsageMicrosoftCommercialCodeSigning: {1, 3, 6, 1, 4, 1, 311, 2, 1, 22},
	x509.ExtKeyUsageMicrosoftKernelCodeSigning:     {1, 3, 6, 1, 4, 1, 311, 61, 1, 1},
}

// The encodings the encoder copies as they are, computed once from the
// OIDs above with cryptobyte.
var (
	// versionV3 is the TBSCertificate's [0] EXPLICIT Version v3 (2).
	versionV3     = []byte{der.ContextSpecific | der.Constructed, 3, der.TagInteger, 1, 2}
	emptySequence = []byte{der.TagSequence, 0}

	derExtKeyUsage         = oidDER(oidExtKeyUsage)
	derExtExtKeyUsage      = oidDER(oidExtExtKeyUsage)
	derExtBasicConstraints = oidDER(oidExtBasicConstraints)
	derExtAuthorityKeyID   = oidDER(oidExtAuthorityKeyID)
	derExtSubjectAltName   = oidDER(oidExtSubjectAltName)

	// The AlgorithmIdentifier of an ECDSA public key on each curve
	// (RFC 5480 2.1.1: id-ecPublicKey with the curve's named OID).
	spkiAlgP256 = ecPublicKeyAlgorithm(oidCurveP256)
	spkiAlgP384 = ecPublicKeyAlgorithm(oidCurveP384)

	ekuDER = ekuEncodings()
)

// SAN GeneralName tags (RFC 5280 4.2.1.6): context-specific, primitive.
const (
	tagSANDNS = der.ContextSpecific | 2
	tagSANURI = der.ContextSpecific | 6
	tagSANIP  = der.ContextSpecific | 7
	tagAKIKey = der.ContextSpecific // keyIdentifier [0]
	tagExts   = der.ContextSpecific | der.Constructed | 3
)

func oidDER(oid []int) []byte {
	var b cryptobyte.Builder
	b.AddASN1ObjectIdentifier(oid)
	return b.BytesOrPanic()
}

func ecPublicKeyAlgorithm(curve []int) []byte {
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1ObjectIdentifier(oidPublicKeyECDSA)
		b.AddASN1ObjectIdentifier(curve)
	})
	return b.BytesOrPanic()
}

func ekuEncodings() map[x509.ExtKeyUsage][]byte {
	out := make(map[x509.ExtKeyUsage][]byte, len(ekuOIDs))
	for u, oid := range ekuOIDs {
		out[u] = oidDER(oid)
	}
	return out
}

// CertificateSize is about the size of the certificate of tmpl, issued
// by issuer over pub and signed by the key of signer, a little over for
// the usual leaf, so that its buffer is allocated once (a short estimate
// costs a copy, never a wrong byte).
func CertificateSize(tmpl, issuer *x509.Certificate, pub, signer crypto.PublicKey) int {
	const fixed = 320 // headers, version, serial, algorithms, validity, usages, constraints
	n := fixed + len(issuer.RawSubject) + len(tmpl.AuthorityKeyId) + 16*len(tmpl.ExtKeyUsage)
	n += keySize(pub) + keySize(signer)
	for _, u := range tmpl.URIs {
		n += len(u.Scheme) + len(u.Opaque) + len(u.Host) + len(u.Path) + len(u.RawQuery) + len(u.Fragment) + 16
	}
	for _, name := range tmpl.DNSNames {
		n += len(name) + 4
	}
	return n + (2+net.IPv6len)*len(tmpl.IPAddresses)
}

// keySize is about the size of the SubjectPublicKeyInfo of pub, and more
// than a signature by its private key.
func keySize(pub crypto.PublicKey) int {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		return 2*(k.Params().BitSize+7)/8 + 32
	case *rsa.PublicKey:
		return k.Size() + 40
	}
	return 0
}

// Write writes the TBSCertificate of a leaf: v3, tmpl's serial, the
// signature AlgorithmIdentifier sigAlg (DER), issuer's raw subject,
// tmpl's validity, an empty subject, pub's SubjectPublicKeyInfo and the
// extensions tmpl asks for. It reads only SerialNumber, NotBefore,
// NotAfter, DNSNames, IPAddresses, URIs, KeyUsage, ExtKeyUsage,
// BasicConstraintsValid (CA:false) and AuthorityKeyId of tmpl; errors
// are left in w.
func Write(w *der.Writer, tmpl, issuer *x509.Certificate, sigAlg []byte, pub crypto.PublicKey) {
	tbs := w.Open(der.TagSequence)
	w.Raw(versionV3)
	w.PositiveInt(tmpl.SerialNumber)
	w.Raw(sigAlg)
	w.Raw(issuer.RawSubject)
	validity := w.Open(der.TagSequence)
	writeTime(w, tmpl.NotBefore)
	writeTime(w, tmpl.NotAfter)
	w.Close(validity)
	w.Raw(emptySequence) // subject
	writeSPKI(w, pub)
	exts := w.Open(tagExts)
	writeExtensions(w, tmpl)
	w.Close(exts)
	w.Close(tbs)
}

// ExtKeyUsages lists the extended key usages Write can encode (those a
// cfssl profile can name), in increasing order.
func ExtKeyUsages() []x509.ExtKeyUsage {
	out := make([]x509.ExtKeyUsage, 0, len(ekuOIDs))
	for u := range ekuOIDs {
		out = append(out, u)
	}
	slices.Sort(out)
	return out
}

// writeSPKI writes pub's SubjectPublicKeyInfo as crypto/x509 marshals it.
// P-256 and P-384 keys are written here from their uncompressed point
// (ecdsa.PublicKey.Bytes, which refuses a point off the curve, as
// x509.MarshalPKIXPublicKey does through it); any other key, and an
// ECDSA key Bytes refuses, goes through x509.MarshalPKIXPublicKey.
func writeSPKI(w *der.Writer, pub crypto.PublicKey) {
	if k, ok := pub.(*ecdsa.PublicKey); ok {
		var alg []byte
		switch k.Curve {
		case elliptic.P256():
			alg = spkiAlgP256
		case elliptic.P384():
			alg = spkiAlgP384
		}
		if point, err := k.Bytes(); alg != nil && err == nil {
			spki := w.Open(der.TagSequence)
			w.Raw(alg)
			bits := w.Open(der.TagBitString)
			w.Byte(0) // no unused bits
			w.Raw(point)
			w.Close(bits)
			w.Close(spki)
			return
		}
	}
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		w.SetError(fmt.Errorf("public key: %w", err))
		return
	}
	w.Raw(spki)
}

// writeExtensions writes the extensions of a leaf, in the order and with
// the criticality crypto/x509 uses: key usage, extended key usage, basic
// constraints, authority key ID, subject alternative names, each only
// when tmpl asks for it.
func writeExtensions(w *der.Writer, tmpl *x509.Certificate) {
	seq := w.Open(der.TagSequence)
	if tmpl.KeyUsage != 0 {
		ext := openExtension(w, derExtKeyUsage, true)
		writeKeyUsage(w, tmpl.KeyUsage)
		ext.close(w)
	}
	if len(tmpl.ExtKeyUsage) > 0 {
		ext := openExtension(w, derExtExtKeyUsage, false)
		writeExtKeyUsage(w, tmpl.ExtKeyUsage)
		ext.close(w)
	}
	if tmpl.BasicConstraintsValid {
		// CA:false is the DEFAULT and there is no pathLen: an empty SEQUENCE.
		ext := openExtension(w, derExtBasicConstraints, true)
		w.Raw(emptySequence)
		ext.close(w)
	}
	if aki := tmpl.AuthorityKeyId; len(aki) > 0 {
		// AuthorityKeyIdentifier with only its keyIdentifier [0].
		ext := openExtension(w, derExtAuthorityKeyID, false)
		s := w.Open(der.TagSequence)
		w.Element(tagAKIKey, aki)
		w.Close(s)
		ext.close(w)
	}
	if len(tmpl.DNSNames)+len(tmpl.IPAddresses)+len(tmpl.URIs) > 0 {
		ext := openExtension(w, derExtSubjectAltName, true)
		writeSubjectAltNames(w, tmpl)
		ext.close(w)
	}
	w.Close(seq)
}

// extension is an Extension being written: its SEQUENCE and its
// extnValue OCTET STRING.
type extension struct{ seq, value int }

// openExtension opens an Extension with the encoded extnID oid; critical
// is omitted when false (DER leaves out DEFAULT values). The caller
// writes the value, then closes it.
func openExtension(w *der.Writer, oid []byte, critical bool) extension {
	seq := w.Open(der.TagSequence)
	w.Raw(oid)
	if critical {
		w.True()
	}
	return extension{seq: seq, value: w.Open(der.TagOctetString)}
}

func (e extension) close(w *der.Writer) {
	w.Close(e.value)
	w.Close(e.seq)
}

// writeExtKeyUsage writes the ExtKeyUsageSyntax SEQUENCE of OIDs.
func writeExtKeyUsage(w *der.Writer, usages []x509.ExtKeyUsage) {
	seq := w.Open(der.TagSequence)
	for _, u := range usages {
		oid, ok := ekuDER[u]
		if !ok {
			w.SetError(fmt.Errorf("unknown extended key usage %d", u))
			return
		}
		w.Raw(oid)
	}
	w.Close(seq)
}

// writeSubjectAltNames writes the GeneralNames SEQUENCE in crypto/x509's
// order: dNSName [2], then iPAddress [7] (IPv4 in 4 bytes), then
// uniformResourceIdentifier [6].
func writeSubjectAltNames(w *der.Writer, tmpl *x509.Certificate) {
	seq := w.Open(der.TagSequence)
	for _, name := range tmpl.DNSNames {
		if !isIA5(name) {
			w.SetError(fmt.Errorf("DNS SAN %q is not IA5String", name))
			return
		}
		w.StringElement(tagSANDNS, name)
	}
	for _, ip := range tmpl.IPAddresses {
		if v4 := ip.To4(); v4 != nil {
			ip = v4
		}
		if len(ip) != net.IPv4len && len(ip) != net.IPv6len {
			w.SetError(fmt.Errorf("IP SAN %v is not an IPv4 or IPv6 address", ip))
			return
		}
		w.Element(tagSANIP, ip)
	}
	for _, u := range tmpl.URIs {
		s := u.String()
		if !isIA5(s) {
			w.SetError(fmt.Errorf("URI SAN %q is not IA5String", s))
			return
		}
		w.StringElement(tagSANURI, s)
	}
	w.Close(seq)
}

// writeKeyUsage writes the KeyUsage BIT STRING: bit 0 (digitalSignature)
// is the most significant bit of the first byte, and trailing zero bits
// are left out (DER for a named bit list, X.690 11.2.2).
func writeKeyUsage(w *der.Writer, ku x509.KeyUsage) {
	bs := [2]byte{reverseBits(byte(ku)), reverseBits(byte(ku >> 8))}
	n := 2
	if bs[1] == 0 {
		n = 1
	}
	last := bs[n-1]
	if last == 0 {
		w.SetError(fmt.Errorf("key usage %#x has no bit RFC 5280 defines", int(ku)))
		return
	}
	unused := uint8(0)
	for last&1 == 0 {
		last >>= 1
		unused++
	}
	bits := w.Open(der.TagBitString)
	w.Byte(unused)
	w.Raw(bs[:n])
	w.Close(bits)
}

func reverseBits(v byte) byte {
	var r byte
	for range 8 {
		r = r<<1 | v&1
		v >>= 1
	}
	return r
}

// writeTime writes t as UTCTime for years 1950 through 2049 and as
// GeneralizedTime otherwise (RFC 5280 4.1.2.5), in UTC and truncated to
// the second, as crypto/x509 does.
func writeTime(w *der.Writer, t time.Time) {
	t = t.UTC().Truncate(time.Second)
	if y := t.Year(); y >= 1950 && y < 2050 {
		w.UTCTime(t)
		return
	}
	w.GeneralizedTime(t)
}

func isIA5(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] > 0x7f {
			return false
		}
	}
	return true
}
