package leaf

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/castellan-dev/castellan/ca/authority/leaf/csrparse"
)

// Key size limits for CSR public keys.
const (
	// MinRSABits is the smallest RSA key accepted, in a CSR or as a CA key.
	MinRSABits = 2048
	// maxRSABits bounds the cost of verifying a CSR signature: a 16k-bit
	// key takes tens of milliseconds to verify, an easy way to burn CPU.
	maxRSABits = 8192
)

// CSR is a certificate signing request that passed validation: its signature
// verifies and its public key is acceptable. For a workload CSR, ID is the
// SPIFFE ID from its single URI SAN; for an agent CSR, ID is zero (the agent's
// ID comes from attestation, not from the request).
type CSR struct {
	ID        spiffeid.ID
	PublicKey crypto.PublicKey
	// RawSubjectPublicKeyInfo is the request's SubjectPublicKeyInfo as sent
	// (a slice of the request's bytes); Sign does not use it, it encodes
	// the key itself.
	RawSubjectPublicKeyInfo []byte
}

// ParseWorkloadCSR parses a DER PKCS#10 request for a workload X.509-SVID and
// validates it:
//   - the self-signature verifies;
//   - the key is ECDSA P-256 or P-384, or RSA of 2048 to 8192 bits. P-224,
//     P-521 and Ed25519 are rejected (reason unsupported_key): P-224 is weak,
//     and P-521 and Ed25519 are not offered by Envoy/BoringSSL by default, so
//     a certificate over such a key would not work in the mesh;
//   - it has exactly one URI SAN, a valid SPIFFE ID in the CA's trust domain
//     with a non-empty path;
//   - it has no DNS, IP or e-mail SAN.
//
// The subject and all other requested extensions are ignored: Sign builds
// the certificate from the ID and the public key only.
//
// ECDSA requests of the usual shape are read by a parser of their own
// (csrparse.ParseFast); anything else, and anything that parser is unsure
// of, by crypto/x509, with the same result either way.
func ParseWorkloadCSR(td spiffeid.TrustDomain, der []byte) (*CSR, error) {
	return parseWorkloadCSR(td, der, csrparse.Parse)
}

// parseWorkloadCSR is ParseWorkloadCSR with the parser given (tests compare
// csrparse.Parse with csrparse.ParseX509).
func parseWorkloadCSR(td spiffeid.TrustDomain, der []byte, parse csrParser) (*CSR, error) {
	req, err := parseCSR(der, parse)
	if err != nil {
		return nil, err
	}
	if n := req.DNSNames + req.IPAddresses + req.EmailAddresses; n > 0 {
		return nil, reject(ReasonForbiddenSAN,
			"CSR has %d DNS, IP or e-mail SANs; an X.509-SVID request carries only its SPIFFE ID as a URI SAN", n)
	}
	switch len(req.URIs) {
	case 0:
		return nil, reject(ReasonNoURISAN, "CSR has no URI SAN; put the workload's SPIFFE ID in a URI SAN")
	case 1:
	default:
		return nil, reject(ReasonMultipleSANs, "CSR has %d URI SANs; an X.509-SVID has exactly one", len(req.URIs))
	}
	id, err := spiffeid.FromURI(req.URIs[0])
	if err != nil {
		return nil, reject(ReasonInvalidSPIFFEID, "CSR URI SAN %q is not a valid SPIFFE ID: %w", req.URIs[0].String(), err)
	}
	if err := CheckID(td, id); err != nil {
		return nil, err
	}
	return &CSR{ID: id, PublicKey: req.PublicKey, RawSubjectPublicKeyInfo: req.RawSubjectPublicKeyInfo}, nil
}

// ParseAgentCSR parses a DER PKCS#10 request for an agent SVID. Only the
// signature and the public key are checked (same key rules as
// ParseWorkloadCSR); the subject and SANs are ignored because the agent's
// SPIFFE ID comes from attestation.
func ParseAgentCSR(der []byte) (*CSR, error) {
	return parseAgentCSR(der, csrparse.Parse)
}

// parseAgentCSR is ParseAgentCSR with the parser given.
func parseAgentCSR(der []byte, parse csrParser) (*CSR, error) {
	req, err := parseCSR(der, parse)
	if err != nil {
		return nil, err
	}
	return &CSR{PublicKey: req.PublicKey, RawSubjectPublicKeyInfo: req.RawSubjectPublicKeyInfo}, nil
}

// csrParser decodes a DER PKCS#10 request: csrparse.Parse, or in tests
// csrparse.ParseX509.
type csrParser func(der []byte) (*csrparse.Request, error)

// parseCSR decodes der with parse and checks the public key, then the
// signature. The key is checked first so that an oversized RSA key never
// costs a verify.
func parseCSR(der []byte, parse csrParser) (*csrparse.Request, error) {
	if len(der) == 0 {
		return nil, reject(ReasonMalformedCSR, "CSR is empty")
	}
	req, err := parse(der)
	if err != nil {
		return nil, reject(ReasonMalformedCSR, "CSR is not a valid DER PKCS#10 request: %w", err)
	}
	if err := CheckPublicKey(req.PublicKey); err != nil {
		return nil, err
	}
	if err := req.CheckSignature(); err != nil {
		return nil, reject(ReasonBadSignature, "CSR signature does not verify with its public key: %w", err)
	}
	return req, nil
}

// CheckPublicKey enforces the key policy described on ParseWorkloadCSR.
func CheckPublicKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256(), elliptic.P384():
			return nil
		}
		return reject(ReasonUnsupportedKey, "ECDSA curve %s is not accepted; use P-256 or P-384", CurveName(k.Curve))
	case *rsa.PublicKey:
		bits := k.N.BitLen()
		if bits < MinRSABits {
			return reject(ReasonWeakRSAKey, "RSA key has %d bits; at least %d are required", bits, MinRSABits)
		}
		if bits > maxRSABits {
			return reject(ReasonUnsupportedKey, "RSA key has %d bits; at most %d are accepted", bits, maxRSABits)
		}
		return nil
	case ed25519.PublicKey:
		return reject(ReasonUnsupportedKey, "Ed25519 keys are not accepted (Envoy does not offer them); use ECDSA P-256")
	case nil:
		return reject(ReasonUnsupportedKey, "CSR public key algorithm is not supported; use ECDSA P-256")
	default:
		return reject(ReasonUnsupportedKey, "public key type %T is not accepted; use ECDSA P-256", pub)
	}
}

// CurveName names c for messages ("unknown" for nil).
func CurveName(c elliptic.Curve) string {
	if c == nil || c.Params() == nil {
		return "unknown"
	}
	return c.Params().Name
}

// CheckID checks that id may appear in an SVID issued by the CA of trust
// domain td.
func CheckID(td spiffeid.TrustDomain, id spiffeid.ID) error {
	switch {
	case id.IsZero():
		return reject(ReasonInvalidSPIFFEID, "SPIFFE ID is empty")
	case !id.MemberOf(td):
		return reject(ReasonWrongTrustDomain, "SPIFFE ID %q is not in trust domain %q", id, td)
	case id.Path() == "":
		return reject(ReasonEmptyPath, "SPIFFE ID %q has no path; a workload ID names something inside the trust domain", id)
	}
	return nil
}
