package server

import (
	"context"

	"google.golang.org/grpc"
)

// The gates below run refusePeer (bans.go) before every call on the main
// port, so that a revoked agent or admin certificate, or an agent
// certificate of a banned node, can neither obtain SVIDs nor renew itself.

func (s *Server) revokedUnaryGate(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if err := s.refusePeer(ctx); err != nil {
		return nil, err
	}
	return h(ctx, req)
}

func (s *Server) revokedStreamGate(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if err := s.refusePeer(ss.Context()); err != nil {
		return err
	}
	return h(srv, ss)
}
