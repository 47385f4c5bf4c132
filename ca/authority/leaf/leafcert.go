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
	c := &x509.Certificate{
		Raw: der, Version: 3, SignatureAlgorithm: alg.x509, PublicKey: pub,
		PublicKeyAlgorithm: publicKeyAlgorithm(pub), SerialNumber: new(big.Int).Set(tmpl.SerialNumber),
		Issuer:    cloneName(issuer.Subject),
		NotBefore: tmpl.NotBefore.UTC().Truncate(time.Second), NotAfter: tmpl.NotAfter.UTC().Truncate(time.Second),
		KeyUsage: tmpl.KeyUsage, ExtKeyUsage: slices.Clone(tmpl.ExtKeyUsage),
		BasicConstraintsValid: tmpl.BasicConstraintsValid,
	}
	if c.BasicConstraintsValid {
		c.MaxPathLen = -1 // CA:false, no pathLenConstraint
	}
	if len(tmpl.AuthorityKeyId) > 0 {
		c.AuthorityKeyId = slices.Clone(tmpl.AuthorityKeyId)
	}
	for _, u := range tmpl.URIs {
		uc := *u
		if u.User != nil {
			return nil, errors.New("authority: leaf.Certificate does not build URI SANs with user information")
		}
		c.URIs = append(c.URIs, &uc)
	}
	if err := locateRaw(c, der); err != nil {
		return nil, err
	}
	return c, nil
}

// locateRaw sets c's raw fields, extensions and signature from der.
func locateRaw(c *x509.Certificate, der []byte) error {
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
	c.Extensions = make([]pkix.Extension, 0, 6) // Create writes at most 5
	for !exts.Empty() {
		var ext, value cryptobyte.String
		var id asn1.ObjectIdentifier
		critical := false
		if !exts.ReadASN1(&ext, cbasn1.SEQUENCE) || !ext.ReadASN1ObjectIdentifier(&id) ||
			ext.PeekASN1Tag(cbasn1.BOOLEAN) && !ext.ReadASN1Boolean(&critical) ||
			!ext.ReadASN1(&value, cbasn1.OCTET_STRING) || !ext.Empty() {
			return errLeafLayout
		}
		c.Extensions = append(c.Extensions, pkix.Extension{Id: id, Critical: critical, Value: value})
	}
	return nil
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

// cloneName returns a copy of n that shares no slice with it.
func cloneName(n pkix.Name) pkix.Name {
	for _, s := range []*[]string{&n.Country, &n.Organization, &n.OrganizationalUnit, &n.Locality, &n.Province, &n.StreetAddress, &n.PostalCode} {
		*s = slices.Clone(*s)
	}
	n.Names, n.ExtraNames = slices.Clone(n.Names), slices.Clone(n.ExtraNames)
	return n
}
