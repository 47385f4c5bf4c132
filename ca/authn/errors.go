// Package authn authenticates callers of the Castellan CA: node agents that
// attest with a one-time join token (or, later, a Kubernetes token), agents
// presenting their agent SVID over mutual TLS, and admin identities.
package authn

import (
	"google.golang.org/grpc/codes"

	"github.com/castellan-dev/castellan/ca/refusal"
)

// Reasons of authentication refusals (Fail); each is a Prometheus label
// value.
const (
	ReasonNoClientCert       = "no_client_cert" // no verified client certificate
	ReasonNotAgent           = "not_agent"      // client SVID is not an agent SVID of this trust domain
	ReasonNotAdmin           = "not_admin"      // client SVID is not a configured admin identity
	ReasonNoAttestation      = "no_attestation" // AttestAgent without any attestation
	ReasonUnsupported        = "unsupported_attestation"
	ReasonJoinTokenUnknown   = "join_token_unknown"
	ReasonJoinTokenUsed      = "join_token_used"
	ReasonJoinTokenExpired   = "join_token_expired"
	ReasonJoinTokenMalformed = "join_token_malformed"
)

// Fail returns a failed authentication (a *refusal.Error): Unauthenticated,
// except ReasonNotAdmin, which is PermissionDenied (the caller is known
// but not allowed). The message, formatted as fmt.Errorf does, is prefixed
// "authn: ".
func Fail(reason, format string, args ...any) *refusal.Error {
	code := codes.Unauthenticated
	if reason == ReasonNotAdmin {
		code = codes.PermissionDenied
	}
	return refusal.Errorf(code, reason, "authn: "+format, args...)
}
