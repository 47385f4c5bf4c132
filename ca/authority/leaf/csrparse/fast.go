package csrparse

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	encasn1 "encoding/asn1"
	"net/url"
	"unicode/utf8"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// DER contents of the object identifiers the fast parser recognises
// (TestFastCSROIDs checks them against encoding/asn1).
var (
	derECDSAWithSHA256  = []byte{0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02}       // 1.2.840.10045.4.3.2
	derECDSAWithSHA384  = []byte{0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03}       // 1.2.840.10045.4.3.3
	derECPublicKey      = []byte{0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01}             // 1.2.840.10045.2.1
	derP256             = []byte{0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07}       // 1.2.840.10045.3.1.7
	derP384             = []byte{0x2b, 0x81, 0x04, 0x00, 0x22}                         // 1.3.132.0.34
	derExtensionRequest = []byte{0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x0e} // 1.2.840.113549.1.9.14
	derSubjectAltName   = []byte{0x55, 0x1d, 0x11}                                     // 2.5.29.17
	derVersion0         = []byte{0x02, 0x01, 0x00}                                     // INTEGER 0, whole element
)

// GeneralName tags of a subjectAltName (RFC 5280, 4.2.1.6), as they appear
// on the wire: context-specific, primitive.
const (
	sanEmail cbasn1.Tag = 0x80 | 1
	sanDNS   cbasn1.Tag = 0x80 | 2
	sanURI   cbasn1.Tag = 0x80 | 6
	sanIP    cbasn1.Tag = 0x80 | 7
)

// ParseFast reads der if it has the shape described above, and reports
// false, having decided nothing, if it has not. It does not check the
// signature (Request.CheckSignature does).
func ParseFast(der []byte) (*Request, bool) {
	in := cryptobyte.String(der)
	var body, info, alg, algOID cryptobyte.String
	var sig encasn1.BitString
	if !in.ReadASN1(&body, cbasn1.SEQUENCE) || !in.Empty() ||
		!body.ReadASN1Element(&info, cbasn1.SEQUENCE) ||
		!body.ReadASN1(&alg, cbasn1.SEQUENCE) ||
		!alg.ReadASN1(&algOID, cbasn1.OBJECT_IDENTIFIER) || !alg.Empty() ||
		!body.ReadASN1BitString(&sig) || sig.BitLength%8 != 0 || !body.Empty() {
		return nil, false
	}
	r := &Request{RawTBSCertificateRequest: info, Signature: sig.Bytes}
	switch {
	case bytes.Equal(algOID, derECDSAWithSHA256):
		r.SignatureAlgorithm = x509.ECDSAWithSHA256
	case bytes.Equal(algOID, derECDSAWithSHA384):
		r.SignatureAlgorithm = x509.ECDSAWithSHA384
	default:
		return nil, false
	}
	if !parseFastInfo(info, r) {
		return nil, false
	}
	return r, true
}

// parseFastInfo reads the CertificationRequestInfo element info into r.
func parseFastInfo(info cryptobyte.String, r *Request) bool {
	var version []byte
	var subject, spki, attrs cryptobyte.String
	if !info.ReadASN1(&info, cbasn1.SEQUENCE) ||
		!info.ReadBytes(&version, len(derVersion0)) || !bytes.Equal(version, derVersion0) ||
		!info.ReadASN1(&subject, cbasn1.SEQUENCE) || !fastSubjectValid(subject) ||
		!info.ReadASN1Element(&spki, cbasn1.SEQUENCE) ||
		!info.ReadASN1(&attrs, cbasn1.Tag(0).Constructed().ContextSpecific()) || !info.Empty() {
		return false
	}
	pub, ok := parseFastKey(spki)
	if !ok {
		return false
	}
	r.PublicKey, r.RawSubjectPublicKeyInfo = pub, spki
	return parseFastAttributes(attrs, r)
}

// fastSubjectValid reports whether rdns, the contents of a Name, is a
// sequence of single-valued RDNs of attributes 2.5.4.n (common name,
// organisation, country, ...) whose values are a PrintableString (without
// the '*' and '&' crypto/x509 tolerates) or valid UTF-8 in a UTF8String.
// The CA ignores the subject; the check only ensures crypto/x509 would not
// refuse it.
func fastSubjectValid(rdns cryptobyte.String) bool {
	for !rdns.Empty() {
		var set, atv, oid, value cryptobyte.String
		var tag cbasn1.Tag
		if !rdns.ReadASN1(&set, cbasn1.SET) ||
			!set.ReadASN1(&atv, cbasn1.SEQUENCE) || !set.Empty() ||
			!atv.ReadASN1(&oid, cbasn1.OBJECT_IDENTIFIER) ||
			len(oid) != 3 || oid[0] != 0x55 || oid[1] != 0x04 || oid[2] >= 0x80 ||
			!atv.ReadAnyASN1(&value, &tag) || !atv.Empty() {
			return false
		}
		switch tag {
		case cbasn1.PrintableString:
			if !printableString(value) {
				return false
			}
		case cbasn1.UTF8String:
			if !utf8.Valid(value) {
				return false
			}
		default:
			return false
		}
	}
	return true
}

// printableString reports whether s holds only characters of the ASN.1
// PrintableString set.
func printableString(s []byte) bool {
	for _, c := range s {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == ' ', c == '\'', c == '(', c == ')', c == '+', c == ',', c == '-',
			c == '.', c == '/', c == ':', c == '=', c == '?':
		default:
			return false
		}
	}
	return true
}

// parseFastKey reads a SubjectPublicKeyInfo holding a P-256 or P-384 key
// as an uncompressed point.
func parseFastKey(spki cryptobyte.String) (*ecdsa.PublicKey, bool) {
	var body, alg, algOID, curveOID cryptobyte.String
	var point encasn1.BitString
	if !spki.ReadASN1(&body, cbasn1.SEQUENCE) ||
		!body.ReadASN1(&alg, cbasn1.SEQUENCE) ||
		!alg.ReadASN1(&algOID, cbasn1.OBJECT_IDENTIFIER) || !bytes.Equal(algOID, derECPublicKey) ||
		!alg.ReadASN1(&curveOID, cbasn1.OBJECT_IDENTIFIER) || !alg.Empty() ||
		!body.ReadASN1BitString(&point) || point.BitLength%8 != 0 || !body.Empty() {
		return nil, false
	}
	var curve elliptic.Curve
	switch {
	case bytes.Equal(curveOID, derP256):
		curve = elliptic.P256()
	case bytes.Equal(curveOID, derP384):
		curve = elliptic.P384()
	default:
		return nil, false
	}
	pub, err := ecdsa.ParseUncompressedPublicKey(curve, point.Bytes)
	if err != nil {
		return nil, false
	}
	return pub, true
}

// parseFastAttributes reads the contents of the attributes field: nothing,
// or one extensionRequest with one value, a list of at most one extension,
// a subjectAltName.
func parseFastAttributes(attrs cryptobyte.String, r *Request) bool {
	if attrs.Empty() {
		return true
	}
	var attr, oid, values, exts cryptobyte.String
	if !attrs.ReadASN1(&attr, cbasn1.SEQUENCE) || !attrs.Empty() ||
		!attr.ReadASN1(&oid, cbasn1.OBJECT_IDENTIFIER) || !bytes.Equal(oid, derExtensionRequest) ||
		!attr.ReadASN1(&values, cbasn1.SET) || !attr.Empty() ||
		!values.ReadASN1(&exts, cbasn1.SEQUENCE) || !values.Empty() {
		return false
	}
	if exts.Empty() {
		return true
	}
	var ext, extOID, value cryptobyte.String
	if !exts.ReadASN1(&ext, cbasn1.SEQUENCE) || !exts.Empty() ||
		!ext.ReadASN1(&extOID, cbasn1.OBJECT_IDENTIFIER) || !bytes.Equal(extOID, derSubjectAltName) {
		return false
	}
	if ext.PeekASN1Tag(cbasn1.BOOLEAN) {
		var critical bool
		if !ext.ReadASN1Boolean(&critical) || !critical {
			return false
		}
	}
	if !ext.ReadASN1(&value, cbasn1.OCTET_STRING) || !ext.Empty() {
		return false
	}
	return parseFastSANs(value, r)
}

// parseFastSANs reads a subjectAltName extension's value: URIs, DNS names,
// e-mail addresses and IP addresses, each valid as crypto/x509 sees it.
func parseFastSANs(value cryptobyte.String, r *Request) bool {
	var names cryptobyte.String
	if !value.ReadASN1(&names, cbasn1.SEQUENCE) || !value.Empty() {
		return false
	}
	for !names.Empty() {
		var name cryptobyte.String
		var tag cbasn1.Tag
		if !names.ReadAnyASN1(&name, &tag) {
			return false
		}
		switch {
		case tag == sanURI:
			u, ok := parseFastURI(name)
			if !ok {
				return false
			}
			r.URIs = append(r.URIs, u)
		case tag == sanDNS && ascii(name):
			r.DNSNames++
		case tag == sanEmail && ascii(name):
			r.EmailAddresses++
		case tag == sanIP && (len(name) == 4 || len(name) == 16):
			r.IPAddresses++
		default:
			return false
		}
	}
	return true
}

// parseFastURI parses a URI SAN as crypto/x509 does, when its host is empty
// or a plain DNS name (labels of lower-case letters, digits, '-' and '_'),
// a case in which crypto/x509's host check passes.
func parseFastURI(b []byte) (*url.URL, bool) {
	if !ascii(b) {
		return nil, false
	}
	u, err := url.Parse(string(b))
	if err != nil || !plainHost(u.Host) {
		return nil, false
	}
	return u, true
}

// plainHost reports whether host is empty or dot-separated non-empty labels
// of lower-case letters, digits, '-' and '_'.
func plainHost(host string) bool {
	label := 0
	for i := 0; i < len(host); i++ {
		switch c := host[i]; {
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '_':
			label++
		case c == '.' && label > 0:
			label = 0
		default:
			return false
		}
	}
	return host == "" || label > 0
}

// ascii reports whether b is all ASCII (an IA5String to crypto/x509).
func ascii(b []byte) bool {
	for _, c := range b {
		if c >= utf8.RuneSelf {
			return false
		}
	}
	return true
}
