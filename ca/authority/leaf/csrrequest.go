package leaf

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"errors"
	"net/url"
)

// request is what the CA takes from a PKCS#10 request, whichever parser
// read it.
type request struct {
	publicKey crypto.PublicKey
	rawSPKI   []byte
	uris      []*url.URL
	// The numbers of DNS, IP and e-mail SANs (refused in a workload CSR,
	// ignored in an agent's).
	dnsNames, ipAddresses, emailAddresses int
	sigAlg                                x509.SignatureAlgorithm

	// x509 is the request as crypto/x509 parsed it, nil when parseFastCSR
	// did; then tbs and signature are what the signature covers and is.
	x509           *x509.CertificateRequest
	tbs, signature []byte
}

// csrParser decodes a DER PKCS#10 request, without checking its signature
// or its key against the CA's policy.
type csrParser func(der []byte) (*request, error)

// parseFastFirst reads der with parseFastCSR, or with crypto/x509 when
// parseFastCSR declines it.
func parseFastFirst(der []byte) (*request, error) {
	if r, ok := parseFastCSR(der); ok {
		return r, nil
	}
	return parseX509(der)
}

// parseX509 reads der with x509.ParseCertificateRequest.
func parseX509(der []byte) (*request, error) {
	req, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, err
	}
	return &request{
		publicKey:      req.PublicKey,
		rawSPKI:        req.RawSubjectPublicKeyInfo,
		uris:           req.URIs,
		dnsNames:       len(req.DNSNames),
		ipAddresses:    len(req.IPAddresses),
		emailAddresses: len(req.EmailAddresses),
		sigAlg:         req.SignatureAlgorithm,
		x509:           req,
	}, nil
}

// errECDSAVerification is the error x509.CertificateRequest.CheckSignature
// returns for an ECDSA signature that does not verify, word for word, so
// that a refusal reads the same whichever parser read the request
// (TestFastCSRMatchesX509 compares them).
var errECDSAVerification = errors.New("x509: ECDSA verification failure")

// checkSignature verifies the request's self-signature: CheckSignature for
// a request crypto/x509 read; for one parseFastCSR read (ECDSA, SHA-256 or
// SHA-384), what CheckSignature does for it: ecdsa.VerifyASN1 over the
// digest of the raw CertificationRequestInfo.
func (r *request) checkSignature() error {
	if r.x509 != nil {
		return r.x509.CheckSignature()
	}
	pub, ok := r.publicKey.(*ecdsa.PublicKey)
	if !ok {
		return x509.ErrUnsupportedAlgorithm
	}
	var valid bool
	switch r.sigAlg {
	case x509.ECDSAWithSHA256:
		d := sha256.Sum256(r.tbs)
		valid = ecdsa.VerifyASN1(pub, d[:], r.signature)
	case x509.ECDSAWithSHA384:
		d := sha512.Sum384(r.tbs)
		valid = ecdsa.VerifyASN1(pub, d[:], r.signature)
	default:
		return x509.ErrUnsupportedAlgorithm
	}
	if !valid {
		return errECDSAVerification
	}
	return nil
}
