package client

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"fmt"
	"net/url"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// NewCSR returns a DER PKCS#10 CSR for key whose only SAN is id's URI (no
// SAN when id is zero).
//
// For ECDSA P-256 and P-384 keys (every key the agent makes) the request is
// encoded here and signed once: x509.CreateCertificateRequest also
// verifies the signature it just made, an ECDSA verification that costs
// twice the signature and protects only against a faulty signer, which the
// CA's own check of every CSR's signature catches anyway. The encoding is
// byte for byte what x509.CreateCertificateRequest produces for the same
// request (TestCSRMatchesCreateCertificateRequest, FuzzCSR). Other keys go
// through x509.CreateCertificateRequest.
func NewCSR(key crypto.Signer, id spiffeid.ID) ([]byte, error) {
	alg, ok := csrAlgorithm(key)
	if !ok {
		return createCSRWithX509(key, id)
	}
	tbs, err := csrInfo(key, id)
	if err != nil {
		return nil, err
	}
	sig, err := key.Sign(rand.Reader, alg.digest(tbs), alg.hash)
	if err != nil {
		return nil, fmt.Errorf("client: sign CSR: %w", err)
	}
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddBytes(tbs)
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { b.AddASN1ObjectIdentifier(alg.oid) })
		b.AddASN1BitString(sig)
	})
	return b.Bytes()
}

// createCSRWithX509 is NewCSR through the standard library.
func createCSRWithX509(key crypto.Signer, id spiffeid.ID) ([]byte, error) {
	tmpl := &x509.CertificateRequest{}
	if !id.IsZero() {
		tmpl.URIs = []*url.URL{id.URL()}
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		return nil, fmt.Errorf("client: create CSR: %w", err)
	}
	return der, nil
}

// csrSigAlg is an ECDSA signature algorithm of a CSR.
type csrSigAlg struct {
	oid  []int // ecdsa-with-SHA256 or -SHA384, without parameters
	hash crypto.Hash
}

func (a csrSigAlg) digest(msg []byte) []byte {
	if a.hash == crypto.SHA384 {
		d := sha512.Sum384(msg)
		return d[:]
	}
	d := sha256.Sum256(msg)
	return d[:]
}

var (
	oidECDSAWithSHA256  = []int{1, 2, 840, 10045, 4, 3, 2}
	oidECDSAWithSHA384  = []int{1, 2, 840, 10045, 4, 3, 3}
	oidExtensionRequest = []int{1, 2, 840, 113549, 1, 9, 14}
	oidSubjectAltName   = []int{2, 5, 29, 17}
)

// csrAlgorithm is the algorithm x509.CreateCertificateRequest picks for
// key, when NewCSR encodes the request itself.
func csrAlgorithm(key crypto.Signer) (csrSigAlg, bool) {
	pub, ok := key.Public().(*ecdsa.PublicKey)
	if !ok {
		return csrSigAlg{}, false
	}
	switch pub.Curve {
	case elliptic.P256():
		return csrSigAlg{oid: oidECDSAWithSHA256, hash: crypto.SHA256}, true
	case elliptic.P384():
		return csrSigAlg{oid: oidECDSAWithSHA384, hash: crypto.SHA384}, true
	}
	return csrSigAlg{}, false
}

// csrInfo encodes the CertificationRequestInfo: version 0, an empty
// subject, key's public key and, when id is set, an extensionRequest
// attribute holding one non-critical subjectAltName with id's URI.
func csrInfo(key crypto.Signer, id spiffeid.ID) ([]byte, error) {
	spki, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return nil, fmt.Errorf("client: encode CSR public key: %w", err)
	}
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1Int64(0)
		b.AddASN1(cbasn1.SEQUENCE, func(*cryptobyte.Builder) {}) // empty subject
		b.AddBytes(spki)
		b.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
			if !id.IsZero() {
				addSANRequest(b, id.String())
			}
		})
	})
	return b.Bytes()
}

// addSANRequest adds the extensionRequest attribute asking for a
// subjectAltName holding uri.
func addSANRequest(b *cryptobyte.Builder, uri string) {
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1ObjectIdentifier(oidExtensionRequest)
		b.AddASN1(cbasn1.SET, func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { // Extensions
				b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { // Extension
					b.AddASN1ObjectIdentifier(oidSubjectAltName)
					b.AddASN1(cbasn1.OCTET_STRING, func(b *cryptobyte.Builder) {
						b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
							b.AddASN1(cbasn1.Tag(6).ContextSpecific(), func(b *cryptobyte.Builder) {
								b.AddBytes([]byte(uri))
							})
						})
					})
				})
			})
		})
	})
}
