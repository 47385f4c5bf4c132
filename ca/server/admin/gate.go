package admin

import (
	"context"
	"log/slog"
	"strings"

	"github.com/castellan-dev/castellan/ca/authn"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
)

// isPublicMethod reports whether method authenticates callers itself (the
// CA service checks agent SVIDs per call; health is open).
func isPublicMethod(method string) bool {
	return strings.HasPrefix(method, "/castellan.ca.v1.CertificateAuthorityService/") ||
		strings.HasPrefix(method, "/grpc.health.v1.Health/")
}

// Gate allows a call on the CA's TCP port to any method other than the
// CA, health and public services only for the admin identities.
type Gate struct {
	admins   map[spiffeid.ID]bool
	isPublic func(method string) bool
	log      *slog.Logger
}

// NewGate returns the gate that lets ids call the admin API (and any
// other service but the CA, health and public services) over mutual TLS.
// isPublic reports whether a method belongs to a service that
// authenticates its callers itself (server.Server.ServePublic).
func NewGate(ids []spiffeid.ID, isPublic func(method string) bool, log *slog.Logger) *Gate {
	g := &Gate{admins: map[spiffeid.ID]bool{}, isPublic: isPublic, log: log}
	for _, id := range ids {
		g.admins[id] = true
	}
	return g
}

// check allows a call to method, or refuses it.
func (g *Gate) check(ctx context.Context, method string) error {
	if isPublicMethod(method) || g.isPublic(method) {
		return nil
	}
	id, err := authn.PeerID(ctx)
	if err != nil {
		return err
	}
	if !g.admins[id] {
		g.log.WarnContext(ctx, "admin call refused", "method", method, "spiffe_id", id.String())
		return authn.Fail(authn.ReasonNotAdmin, "%s is not an admin identity of this CA; use the admin socket or a configured --admin-id", id)
	}
	return nil
}

// Unary is the gate's unary interceptor.
func (g *Gate) Unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if err := g.check(ctx, info.FullMethod); err != nil {
		return nil, err
	}
	return h(ctx, req)
}

// Stream is the gate's stream interceptor.
func (g *Gate) Stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if err := g.check(ss.Context(), info.FullMethod); err != nil {
		return err
	}
	return h(srv, ss)
}
