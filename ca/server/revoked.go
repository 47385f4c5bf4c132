package server

import (
	"context"

	"github.com/castellan-dev/castellan/ca/ledger"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// refuseRevokedPeer fails with Unauthenticated when the caller's verified
// client certificate (an agent or admin SVID) has been revoked, so that a
// revoked agent can neither obtain SVIDs nor renew itself. Calls without a
// client certificate pass; the handlers decide whether they need one.
func (s *Server) refuseRevokedPeer(ctx context.Context) error {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 || len(info.State.VerifiedChains[0]) == 0 {
		return nil
	}
	leaf := info.State.VerifiedChains[0][0]
	serial := ledger.SerialOf(leaf.SerialNumber)
	if !s.cfg.Ledger.IsRevoked(serial, s.clock()) {
		return nil
	}
	id := "(no SPIFFE ID)"
	if len(leaf.URIs) == 1 {
		id = leaf.URIs[0].String()
	}
	return status.Errorf(codes.Unauthenticated,
		"client certificate %s (serial %s) has been revoked; attest this agent again with a new join token", id, serial)
}

func (s *Server) revokedUnaryGate(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if err := s.refuseRevokedPeer(ctx); err != nil {
		return nil, err
	}
	return h(ctx, req)
}

func (s *Server) revokedStreamGate(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if err := s.refuseRevokedPeer(ss.Context()); err != nil {
		return err
	}
	return h(srv, ss)
}
