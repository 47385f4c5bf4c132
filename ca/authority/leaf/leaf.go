package leaf

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"errors"
	"fmt"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"

	"github.com/castellan-dev/castellan/ca/authority/leaf/internal/der"
	"github.com/castellan-dev/castellan/ca/authority/leaf/internal/tbs"
)

// Object identifiers of the signature algorithms (RFC 5758, RFC 8017).
var (
	oidSigECDSAWithSHA256 = []int{1, 2, 840, 10045, 4, 3, 2}
	oidSigECDSAWithSHA384 = []int{1, 2, 840, 10045, 4, 3, 3}
	oidSigSHA256WithRSA   = []int{1, 2, 840, 113549, 1, 1, 11}
)

// SigAlg is how an issuer key signs: the AlgorithmIdentifier and the hash.
// Get one from AlgorithmFor.
type SigAlg struct {
	oid  []int
	der  []byte // the AlgorithmIdentifier: oid, then NULL parameters for RSA PKCS #1 v1.5 (absent for ECDSA, RFC 5758 3.2)
	hash crypto.Hash
	x509 x509.SignatureAlgorithm // as crypto/x509 names it
}

// The three signature algorithms AlgorithmFor picks from.
var (
	sigECDSAWithSHA256 = newSigAlg(oidSigECDSAWithSHA256, false, crypto.SHA256, x509.ECDSAWithSHA256)
	sigECDSAWithSHA384 = newSigAlg(oidSigECDSAWithSHA384, false, crypto.SHA384, x509.ECDSAWithSHA384)
	sigSHA256WithRSA   = newSigAlg(oidSigSHA256WithRSA, true, crypto.SHA256, x509.SHA256WithRSA)
)

func newSigAlg(oid []int, null bool, hash crypto.Hash, alg x509.SignatureAlgorithm) SigAlg {
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1ObjectIdentifier(oid)
		if null {
			b.AddASN1NULL()
		}
	})
	return SigAlg{oid: oid, der: b.BytesOrPanic(), hash: hash, x509: alg}
}

// AlgorithmFor picks the signature algorithm crypto/x509 would pick for key:
// ecdsa-with-SHA256 for P-256, ecdsa-with-SHA384 for P-384 and
// sha256WithRSAEncryption for RSA.
func AlgorithmFor(key crypto.Signer) (SigAlg, error) {
	switch pub := key.Public().(type) {
	case *ecdsa.PublicKey:
		switch pub.Curve {
		case elliptic.P256():
			return sigECDSAWithSHA256, nil
		case elliptic.P384():
			return sigECDSAWithSHA384, nil
		}
		return SigAlg{}, fmt.Errorf("authority: unsupported CA curve %s", CurveName(pub.Curve))
	case *rsa.PublicKey:
		return sigSHA256WithRSA, nil
	}
	return SigAlg{}, fmt.Errorf("authority: unsupported CA key type %T", key.Public())
}

// digest hashes msg with s.hash.
func (s SigAlg) digest(msg []byte) []byte {
	switch s.hash {
	case crypto.SHA384:
		d := sha512.Sum384(msg)
		return d[:]
	default:
		d := sha256.Sum256(msg)
		return d[:]
	}
}

// Create encodes and signs the leaf described by tmpl, issued by issuer
// with key over pub, and returns the DER certificate. It is equivalent to
//
//	x509.CreateCertificate(rand.Reader, tmpl, issuer, pub, key)
//
// for the templates Template builds, but signs once instead of signing
// and then verifying the signature (see ca/authority's package comment); the tests
// compare the two field by field and FuzzLeafTBS byte for byte. Like
// crypto/x509 it marshals pub afresh rather than copying a CSR's
// SubjectPublicKeyInfo, which the CSR parser accepts with bytes it ignores
// (after or inside an RSA key) that must not reach a signed leaf. It reads only SerialNumber, NotBefore,
// NotAfter, DNSNames and IPAddresses (set by SignServer only), URIs, KeyUsage, ExtKeyUsage, BasicConstraintsValid, IsCA and
// AuthorityKeyId (Template sets it to the issuer's SubjectKeyId, which
// is what crypto/x509 would use), and refuses CA templates. The subject is empty, so the
// SAN extension is critical (RFC 5280 4.2.1.6).
//
// The whole certificate is written into one buffer sized for it (package
// der): the TBSCertificate (package tbs), then, once it is signed, the
// algorithm and the signature after it.
func Create(tmpl, issuer *x509.Certificate, pub crypto.PublicKey, key crypto.Signer) ([]byte, error) {
	if tmpl.IsCA {
		return nil, errors.New("authority: leaf encoder cannot issue CA certificates")
	}
	if tmpl.SerialNumber == nil || tmpl.SerialNumber.Sign() <= 0 {
		return nil, errors.New("authority: leaf serial number must be positive")
	}
	alg, err := AlgorithmFor(key)
	if err != nil {
		return nil, err
	}
	var w der.Writer
	w.Reset(make([]byte, 0, tbs.CertificateSize(tmpl, issuer, pub, key.Public())))
	cert := w.Open(der.TagSequence)
	tbsStart := w.Len()
	tbs.Write(&w, tmpl, issuer, alg.der, pub)
	if err := w.Err(); err != nil {
		return nil, fmt.Errorf("authority: encode leaf: %w", err)
	}
	sig, err := signTBS(w.Written(tbsStart), alg, key)
	if err != nil {
		return nil, err
	}
	w.Raw(alg.der)
	bits := w.Open(der.TagBitString)
	w.Byte(0) // no unused bits
	w.Raw(sig)
	w.Close(bits)
	w.Close(cert)
	der, err := w.Bytes()
	if err != nil {
		return nil, fmt.Errorf("authority: encode leaf: %w", err)
	}
	return der, nil
}

// signTBS signs tbs with key. An RSA signature is verified before it is
// returned, as crypto/x509 does; an ECDSA one is not.
func signTBS(tbs []byte, alg SigAlg, key crypto.Signer) ([]byte, error) {
	sig, err := key.Sign(rand.Reader, alg.digest(tbs), alg.hash)
	if err != nil {
		return nil, fmt.Errorf("authority: sign leaf: %w", err)
	}
	if pub, ok := key.Public().(*rsa.PublicKey); ok {
		// Verifying an RSA signature costs ~1% of making one; keep
		// crypto/x509's check against a faulty signer there. For ECDSA the
		// check would double the cost of issuance.
		if err := rsa.VerifyPKCS1v15(pub, alg.hash, alg.digest(tbs), sig); err != nil {
			return nil, fmt.Errorf("authority: leaf signature does not verify: %w", err)
		}
	}
	return sig, nil
}
