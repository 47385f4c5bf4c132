package audit

import (
	"context"
	"net"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// Authorizer decides whether the caller in ctx may use the audit API. It
// returns nil to allow the call, or a gRPC status error (Unauthenticated,
// PermissionDenied) that is returned to the caller as is.
type Authorizer func(ctx context.Context) error

// AdminAuthorizer allows callers on a Unix socket (the CA's owner-only
// admin socket, whose listener checks peer credentials) and TLS callers
// whose verified client certificate is an X.509-SVID for one of admins.
// Everyone else is refused.
func AdminAuthorizer(admins ...spiffeid.ID) Authorizer {
	set := make(map[spiffeid.ID]bool, len(admins))
	for _, id := range admins {
		set[id] = true
	}
	return func(ctx context.Context) error {
		p, ok := peer.FromContext(ctx)
		if !ok {
			return status.Error(codes.Unauthenticated, "audit: no peer information; call the audit API over the admin socket or mutual TLS")
		}
		if _, unix := p.Addr.(*net.UnixAddr); unix && p.AuthInfo == nil {
			return nil
		}
		id, err := callerID(p)
		if err != nil {
			return err
		}
		if !set[id] {
			return status.Errorf(codes.PermissionDenied, "audit: %s is not an admin identity of this CA; use the admin socket or ask for it to be added with --admin-id", id)
		}
		return nil
	}
}

// callerID returns the SPIFFE ID of a mutual-TLS caller's verified SVID.
func callerID(p *peer.Peer) (spiffeid.ID, error) {
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.VerifiedChains) == 0 || len(ti.State.VerifiedChains[0]) == 0 {
		return spiffeid.ID{}, status.Error(codes.Unauthenticated, "audit: a client certificate (an admin X.509-SVID) is required")
	}
	id, err := x509svid.IDFromCert(ti.State.VerifiedChains[0][0])
	if err != nil {
		return spiffeid.ID{}, status.Errorf(codes.Unauthenticated, "audit: client certificate is not an X.509-SVID: %v", err)
	}
	return id, nil
}

// denyAll is the authorizer of a Service built without one.
func denyAll(context.Context) error {
	return status.Error(codes.PermissionDenied, "audit: no authorizer configured on this server; the audit API is closed")
}

// callerName describes the caller for logs.
func callerName(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return "unknown"
	}
	if id, err := callerID(p); err == nil {
		return id.String()
	}
	if _, unix := p.Addr.(*net.UnixAddr); unix {
		return "admin-socket"
	}
	return p.Addr.String()
}
