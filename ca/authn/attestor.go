package authn

import (
	"context"

	cav1 "github.com/castellan-dev/castellan/api/castellan/ca/v1"
)

// NodeAttestor proves which node an AttestAgent request comes from.
// Attest returns the node name, or an error: an *refusal.Error (Unauthenticated)
// when the attestation is refused. Implementations must be safe for
// concurrent use, and must not accept the same single-use proof twice.
type NodeAttestor interface {
	Attest(ctx context.Context, req *cav1.AttestAgentRequest) (node string, err error)
}

// JoinTokenAttestor attests nodes with one-time join tokens. Requests that
// carry a Kubernetes token go to K8s when it is set.
type JoinTokenAttestor struct {
	Tokens *JoinTokens
	// K8s attests requests with a k8s_sat (nil: refused).
	K8s NodeAttestor
}

// Attest implements NodeAttestor.
func (a *JoinTokenAttestor) Attest(ctx context.Context, req *cav1.AttestAgentRequest) (string, error) {
	switch att := req.GetAttestation().(type) {
	case *cav1.AttestAgentRequest_JoinToken:
		use, err := a.Tokens.Consume(ctx, att.JoinToken)
		if err != nil {
			return "", err
		}
		return use.Node, nil
	case *cav1.AttestAgentRequest_K8SSat:
		if a.K8s == nil {
			return "", Fail(ReasonUnsupported, "Kubernetes service-account attestation is not enabled on this CA; attest with a join token")
		}
		return a.K8s.Attest(ctx, req)
	default:
		return "", Fail(ReasonNoAttestation, "request carries no attestation; set join_token (from `castellanctl token create`)")
	}
}
