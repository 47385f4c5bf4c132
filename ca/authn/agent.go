package authn

import (
	"context"
	"crypto/x509"
	"fmt"
	"regexp"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// agentPathPrefix is the path under which agent SVIDs live:
// spiffe://<td>/castellan/agent/<node>.
const agentPathPrefix = "/castellan/agent/"

// ServerPath is the path of the CA server's own SVID.
const ServerPath = "/castellan/server"

// nodeName is what a node name may look like: a DNS-1123 subdomain (the
// Kubernetes rule for node names), so it is safe in a SPIFFE ID path.
var nodeName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)

// ValidateNodeName checks that node is a valid node name.
func ValidateNodeName(node string) error {
	if len(node) == 0 || len(node) > 253 || !nodeName.MatchString(node) {
		return fmt.Errorf("authn: node name %q is invalid; use lower-case letters, digits, '-' and '.' (a DNS-1123 subdomain, at most 253 characters)", node)
	}
	return nil
}

// AgentID returns the SPIFFE ID of the agent on node.
func AgentID(td spiffeid.TrustDomain, node string) (spiffeid.ID, error) {
	if err := ValidateNodeName(node); err != nil {
		return spiffeid.ID{}, err
	}
	id, err := spiffeid.FromPath(td, agentPathPrefix+node)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("authn: agent ID for node %q: %w", node, err)
	}
	return id, nil
}

// ServerID returns the SPIFFE ID of the CA server in td.
func ServerID(td spiffeid.TrustDomain) spiffeid.ID {
	return spiffeid.RequireFromPath(td, ServerPath)
}

// NodeOf returns the node of an agent SPIFFE ID in td, or an *refusal.Error if id
// is not one.
func NodeOf(td spiffeid.TrustDomain, id spiffeid.ID) (string, error) {
	node, ok := strings.CutPrefix(id.Path(), agentPathPrefix)
	if !id.MemberOf(td) || !ok || ValidateNodeName(node) != nil {
		return "", Fail(ReasonNotAgent, "client certificate identity %q is not an agent of trust domain %q (want spiffe://%s%s<node>)",
			id, td, td, agentPathPrefix)
	}
	return node, nil
}

// PeerID returns the SPIFFE ID of the caller's verified client certificate.
// It returns an *refusal.Error (Unauthenticated) if the connection is not TLS or
// the caller presented no certificate that verified against the trust
// bundle.
func PeerID(ctx context.Context) (spiffeid.ID, error) {
	p, ok := peer.FromContext(ctx)
	if !ok || p.AuthInfo == nil {
		return spiffeid.ID{}, Fail(ReasonNoClientCert, "no client certificate: this call needs mutual TLS with an agent SVID (attest first with a join token)")
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 || len(info.State.VerifiedChains[0]) == 0 {
		return spiffeid.ID{}, Fail(ReasonNoClientCert, "no verified client certificate: this call needs mutual TLS with an agent SVID (attest first with a join token)")
	}
	return idOf(info.State.VerifiedChains[0][0])
}

func idOf(leaf *x509.Certificate) (spiffeid.ID, error) {
	id, err := x509svid.IDFromCert(leaf)
	if err != nil {
		return spiffeid.ID{}, Fail(ReasonNotAgent, "client certificate is not an X.509-SVID: %w", err)
	}
	return id, nil
}

// PeerNode returns the node of the calling agent: the caller must present a
// verified agent SVID of td.
func PeerNode(ctx context.Context, td spiffeid.TrustDomain) (string, error) {
	id, err := PeerID(ctx)
	if err != nil {
		return "", err
	}
	return NodeOf(td, id)
}
