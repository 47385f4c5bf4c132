// Package authn authenticates callers of the Castellan CA: node agents that
// attest with a one-time join token (or, later, a Kubernetes token), agents
// presenting their agent SVID over mutual TLS, and admin identities.
package authn

import (
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Reasons carried by *Error; each is a Prometheus label value.
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

// Error is a failed authentication. Reason is one of the Reason* constants;
// Err says what was wrong. It maps to gRPC Unauthenticated, except
// ReasonNotAdmin, which maps to PermissionDenied (the caller is known but
// not allowed).
type Error struct {
	Reason string
	Err    error
}

func fail(reason, format string, args ...any) *Error {
	return &Error{Reason: reason, Err: fmt.Errorf(format, args...)}
}

// Error implements error.
func (e *Error) Error() string { return "authn: " + e.Err.Error() }

// Unwrap returns the underlying error.
func (e *Error) Unwrap() error { return e.Err }

// GRPCStatus returns the gRPC status for the failure.
func (e *Error) GRPCStatus() *status.Status {
	code := codes.Unauthenticated
	if e.Reason == ReasonNotAdmin {
		code = codes.PermissionDenied
	}
	return status.New(code, e.Error())
}

// ReasonOf returns the Reason of the first *Error in err's chain, "" if err
// is nil and "internal" for any other error.
func ReasonOf(err error) string {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return "internal"
}
