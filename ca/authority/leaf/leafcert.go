package leaf

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"math/big"
	"net/url"
	"slices"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// errLeafLayout: der is not a certificate as Create lays it out.
var errLeafLayout = errors.New("authority: signed leaf does not have the layout the encoder writes")

// Certificate returns the certificate Create encoded in der from
// tmpl (signed by issuer with alg, over pub) as x509.ParseCertificate
// returns it, without parsing again what the encoder was given: the
// public key, the issuer's name, the validity, the usages and the URI
// SANs are taken from the inputs (copied, so the certificate shares no
// mutable state with them), and only the raw slices and the extensions
// are located in der. It spares Sign a full parse (~5 % of the CPU of an
// issuance). The tests and FuzzLeafTBS check that the result is
// reflect.DeepEqual to x509.ParseCertificate(der).
//
// It is for templates without DNS or IP SANs (SignServer's certificates
// are parsed), signed by an issuer whose Subject was parsed from its
// RawSubject, and only where crypto/x509 accepts the URI SAN's host (the
// trust domain): Authority.sign parses the first leaf of its trust
// domain to find out.
func Certificate(der []byte, tmpl, issuer *x509.Certificate, pub crypto.PublicKey, alg SigAlg) (*x509.Certificate, error) {
	if len(tmpl.DNSNames)+len(tmpl.IPAddresses) > 0 {
		return nil, errors.New("authority: leaf.Certificate does not build certificates with DNS or IP SANs")
	}
	blk := new(certBlock)
	c := &blk.cert
	*c = x509.Certificate{
		Raw: der, Version: 3, SignatureAlgorithm: alg.x509, PublicKey: pub,
		PublicKeyAlgorithm: publicKeyAlgorithm(pub), SerialNumber: blk.serial.Set(tmpl.SerialNumber),
		Issuer:    blk.cloneName(issuer.Subject),
		NotBefore: tmpl.NotBefore.UTC().Truncate(time.Second), NotAfter: tmpl.NotAfter.UTC().Truncate(time.Second),
		KeyUsage: tmpl.KeyUsage, ExtKeyUsage: cloneInto(blk.eku[:], tmpl.ExtKeyUsage),
		BasicConstraintsValid: tmpl.BasicConstraintsValid,
		AuthorityKeyId:        cloneInto(blk.aki[:], tmpl.AuthorityKeyId),
	}
	if c.BasicConstraintsValid {
		c.MaxPathLen = -1 // CA:false, no pathLenConstraint
	}
	if err := blk.copyURIs(tmpl.URIs); err != nil {
		return nil, err
	}
	if err := blk.locateRaw(der); err != nil {
		return nil, err
	}
	return c, nil
}

// Room in a certBlock: what the leaves Create writes for Template need
// (one URI SAN, two EKUs, a 20-byte key ID, at most five extensions of
// four arcs each) and the issuer the CA generates (O, OU, CN). Anything
// larger is allocated on its own. (With this room the block is 2,256
// bytes with Go 1.26, in the runtime's 2,304-byte size class.)
const (
	blockURIs        = 1
	blockEKUs        = 2
	blockKeyID       = 20
	blockExts        = 5
	blockExtArcs     = 4
	blockNameAttrs   = 3
	blockNameStrings = 3
)

// certBlock is everything Certificate builds, in one allocation instead
// of a dozen: the certificate and the memory its slices and pointers
// point into. Every slice into it is capped at its own length, so an
// append by the caller copies out rather than overwriting a neighbour.
type certBlock struct {
	cert    x509.Certificate
	serial  big.Int
	uris    [blockURIs]*url.URL
	uri     [blockURIs]url.URL
	eku     [blockEKUs]x509.ExtKeyUsage
	aki     [blockKeyID]byte
	exts    [blockExts]pkix.Extension
	arcs    [blockExts * blockExtArcs]int
	names   [blockNameAttrs]pkix.AttributeTypeAndValue
	strings [blockNameStrings]string
}

// cloneInto returns a copy of src in room when it fits there (capped at
// its length), else a fresh copy; nil for an empty src, as
// x509.ParseCertificate leaves an absent field.
func cloneInto[T any](room, src []T) []T {
	if len(src) == 0 {
		return nil
	}
	if len(src) > len(room) {
		return slices.Clone(src)
	}
	n := copy(room, src)
	return room[:n:n]
}

// copyURIs sets the certificate's URIs to copies of uris.
func (b *certBlock) copyURIs(uris []*url.URL) error {
	c := &b.cert
	for i, u := range uris {
		if u.User != nil {
			return errors.New("authority: leaf.Certificate does not build URI SANs with user information")
		}
		if i < blockURIs {
			b.uri[i] = *u
			c.URIs = b.uris[: i+1 : i+1]
			c.URIs[i] = &b.uri[i]
			continue
		}
		uc := *u
		c.URIs = append(c.URIs, &uc)
	}
	return nil
}

// locateRaw sets the certificate's raw fields, extensions and signature
// from der.
func (b *certBlock) locateRaw(der []byte) error {
	c := &b.cert
	in := cryptobyte.String(der)
	var cert, tbs, body, sig, tagged, exts cryptobyte.String
	var issuer, subject, spki cryptobyte.String
	ok := in.ReadASN1(&cert, cbasn1.SEQUENCE) && in.Empty() &&
		cert.ReadASN1Element(&tbs, cbasn1.SEQUENCE) && cert.SkipASN1(cbasn1.SEQUENCE) &&
		cert.ReadASN1(&sig, cbasn1.BIT_STRING) && cert.Empty()
	c.RawTBSCertificate = tbs
	ok = ok && tbs.ReadASN1(&body, cbasn1.SEQUENCE) &&
		body.SkipASN1(cbasn1.Tag(0).Constructed().ContextSpecific()) && // version
		body.SkipASN1(cbasn1.INTEGER) && body.SkipASN1(cbasn1.SEQUENCE) && // serial, signature
		body.ReadASN1Element(&issuer, cbasn1.SEQUENCE) && body.SkipASN1(cbasn1.SEQUENCE) && // validity
		body.ReadASN1Element(&subject, cbasn1.SEQUENCE) && body.ReadASN1Element(&spki, cbasn1.SEQUENCE) &&
		body.ReadASN1(&tagged, cbasn1.Tag(3).Constructed().ContextSpecific()) && body.Empty() &&
		tagged.ReadASN1(&exts, cbasn1.SEQUENCE) && tagged.Empty() && len(sig) > 0 && sig[0] == 0
	if !ok {
		return errLeafLayout
	}
	c.RawIssuer, c.RawSubject, c.RawSubjectPublicKeyInfo, c.Signature = issuer, subject, spki, sig[1:]
	c.Extensions = b.exts[:0:blockExts]
	for !exts.Empty() {
		var ext, value cryptobyte.String
		critical := false
		if !exts.ReadASN1(&ext, cbasn1.SEQUENCE) {
			return errLeafLayout
		}
		id, ok := b.readExtensionID(&ext)
		if !ok || ext.PeekASN1Tag(cbasn1.BOOLEAN) && !ext.ReadASN1Boolean(&critical) ||
			!ext.ReadASN1(&value, cbasn1.OCTET_STRING) || !ext.Empty() {
			return errLeafLayout
		}
		c.Extensions = append(c.Extensions, pkix.Extension{Id: id, Critical: critical, Value: value})
	}
	c.Extensions = c.Extensions[:len(c.Extensions):len(c.Extensions)]
	return nil
}

// readExtensionID reads an extension's OID from ext. The ones Create
// writes, id-ce arcs 2.5.29.n with n < 128, are put in the block's room
// while it lasts; any other is read by cryptobyte.
func (b *certBlock) readExtensionID(ext *cryptobyte.String) (asn1.ObjectIdentifier, bool) {
	probe := *ext
	var raw cryptobyte.String
	i := len(b.cert.Extensions)
	if i < blockExts && probe.ReadASN1(&raw, cbasn1.OBJECT_IDENTIFIER) &&
		len(raw) == 3 && raw[0] == 2*40+5 && raw[1] == 29 && raw[2] < 0x80 {
		*ext = probe
		arcs := b.arcs[i*blockExtArcs : (i+1)*blockExtArcs : (i+1)*blockExtArcs]
		arcs[0], arcs[1], arcs[2], arcs[3] = 2, 5, 29, int(raw[2])
		return arcs, true
	}
	var id asn1.ObjectIdentifier
	return id, ext.ReadASN1ObjectIdentifier(&id)
}

// publicKeyAlgorithm names pub's algorithm as crypto/x509 does.
func publicKeyAlgorithm(pub crypto.PublicKey) x509.PublicKeyAlgorithm {
	switch pub.(type) {
	case *ecdsa.PublicKey:
		return x509.ECDSA
	case *rsa.PublicKey:
		return x509.RSA
	}
	return x509.UnknownPublicKeyAlgorithm
}

// cloneName returns a copy of n that shares no slice with it, its
// attributes and strings in the block while they fit.
func (b *certBlock) cloneName(n pkix.Name) pkix.Name {
	room := b.strings[:]
	for _, s := range []*[]string{&n.Country, &n.Organization, &n.OrganizationalUnit, &n.Locality, &n.Province, &n.StreetAddress, &n.PostalCode} {
		if len(*s) > len(room) {
			*s = slices.Clone(*s)
			continue
		}
		if *s != nil {
			k := copy(room, *s)
			*s, room = room[:k:k], room[k:]
		}
	}
	n.Names, n.ExtraNames = cloneInto(b.names[:], n.Names), slices.Clone(n.ExtraNames)
	return n
}
