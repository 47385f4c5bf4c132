package csrparse

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"errors"
	"net/url"
)

// Request is what the CA takes from a PKCS#10 request, whichever parser
// read it. Its byte slices point into the parsed DER.
type Request struct {
	PublicKey               crypto.PublicKey
	RawSubjectPublicKeyInfo []byte
	URIs                    []*url.URL
	// The numbers of DNS, IP and e-mail SANs (a workload request may have
	// none; an agent's are ignored).
	DNSNames, IPAddresses, EmailAddresses int
	SignatureAlgorithm                    x509.SignatureAlgorithm
	// RawTBSCertificateRequest is what Signature signs.
	RawTBSCertificateRequest, Signature []byte

	x509 *x509.CertificateRequest // as ParseX509 read it; nil from ParseFast
}

// Parse reads der with ParseFast, or with ParseX509 when ParseFast declines
// it. It does not check the signature (CheckSignature does) or the key.
func Parse(der []byte) (*Request, error) {
	if r, ok := ParseFast(der); ok {
		return r, nil
	}
	return ParseX509(der)
}

// ParseX509 reads der with x509.ParseCertificateRequest, and fails with its
// error.
func ParseX509(der []byte) (*Request, error) {
	req, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, err
	}
	return &Request{
		PublicKey:                req.PublicKey,
		RawSubjectPublicKeyInfo:  req.RawSubjectPublicKeyInfo,
		URIs:                     req.URIs,
		DNSNames:                 len(req.DNSNames),
		IPAddresses:              len(req.IPAddresses),
		EmailAddresses:           len(req.EmailAddresses),
		SignatureAlgorithm:       req.SignatureAlgorithm,
		RawTBSCertificateRequest: req.RawTBSCertificateRequest,
		Signature:                req.Signature,
		x509:                     req,
	}, nil
}

// errECDSAVerification is the error x509.CertificateRequest.CheckSignature
// returns for an ECDSA signature that does not verify, word for word, so
// that a refusal reads the same whichever parser read the request
// (TestFastCSRMatchesX509 and FuzzCSRParse compare them).
var errECDSAVerification = errors.New("x509: ECDSA verification failure")

// CheckSignature verifies the request's self-signature: for a request
// ParseX509 read, with x509.CertificateRequest.CheckSignature; for one
// ParseFast read (ECDSA, SHA-256 or SHA-384), as CheckSignature does it:
// ecdsa.VerifyASN1 over the digest of the raw CertificationRequestInfo.
func (r *Request) CheckSignature() error {
	if r.x509 != nil {
		return r.x509.CheckSignature()
	}
	pub, ok := r.PublicKey.(*ecdsa.PublicKey)
	if !ok {
		return x509.ErrUnsupportedAlgorithm
	}
	var valid bool
	switch r.SignatureAlgorithm {
	case x509.ECDSAWithSHA256:
		d := sha256.Sum256(r.RawTBSCertificateRequest)
		valid = ecdsa.VerifyASN1(pub, d[:], r.Signature)
	case x509.ECDSAWithSHA384:
		d := sha512.Sum384(r.RawTBSCertificateRequest)
		valid = ecdsa.VerifyASN1(pub, d[:], r.Signature)
	default:
		return x509.ErrUnsupportedAlgorithm
	}
	if !valid {
		return errECDSAVerification
	}
	return nil
}
