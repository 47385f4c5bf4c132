package cutoff

import (
	"context"

	"google.golang.org/grpc"
)

// Unary runs RefusePeer before every unary call on the CA's TCP port, so
// that a revoked agent or admin certificate, or an agent certificate of a
// banned node, can neither obtain SVIDs nor renew itself.
func (g *Guard) Unary(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if err := g.RefusePeer(ctx); err != nil {
		return nil, err
	}
	return h(ctx, req)
}

// Stream runs RefusePeer before every stream on the CA's TCP port.
func (g *Guard) Stream(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if err := g.RefusePeer(ss.Context()); err != nil {
		return err
	}
	return h(srv, ss)
}
