package leaf

import (
	"errors"

	"google.golang.org/grpc/codes"

	"github.com/castellan-dev/castellan/ca/refusal"
)

// Reasons carried by the refusals (ca/refusal) of a request or SPIFFE ID.
// Each is a short snake_case string suitable as a Prometheus label value;
// the set is closed so label cardinality stays small.
const (
	ReasonMalformedCSR     = "malformed_csr"      // bytes are not a DER PKCS#10 request
	ReasonBadSignature     = "bad_signature"      // the CSR's self-signature does not verify
	ReasonWeakRSAKey       = "weak_rsa_key"       // RSA modulus under 2048 bits
	ReasonUnsupportedKey   = "unsupported_key"    // key type or curve not accepted
	ReasonNoURISAN         = "no_uri_san"         // workload CSR without a URI SAN
	ReasonMultipleSANs     = "multiple_sans"      // more than one URI SAN
	ReasonForbiddenSAN     = "forbidden_san"      // DNS, IP or e-mail SAN present
	ReasonInvalidSPIFFEID  = "invalid_spiffe_id"  // URI SAN or ID is not a valid SPIFFE ID
	ReasonWrongTrustDomain = "wrong_trust_domain" // SPIFFE ID outside the CA's trust domain
	ReasonEmptyPath        = "empty_path"         // SPIFFE ID is the trust domain itself
)

// ErrSignerExpired is returned by Template when the signing certificate is
// no longer valid at the signing time. It is a CA-side failure, not a bad
// request.
var ErrSignerExpired = errors.New("authority: intermediate CA certificate has expired; rotate the CA")

// reject returns a refusal with code InvalidArgument and a message prefixed
// "authority: ", the CA's one refusal form.
func reject(reason, format string, args ...any) *refusal.Error {
	return refusal.Errorf(codes.InvalidArgument, reason, "authority: "+format, args...)
}
