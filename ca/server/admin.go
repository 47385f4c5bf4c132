package server

import (
	"context"
	"errors"
	"time"

	adminv1 "github.com/castellan-dev/castellan/api/castellan/admin/v1"
	"github.com/castellan-dev/castellan/ca/authz"
	"github.com/castellan-dev/castellan/ca/server/edge"
	"github.com/castellan-dev/castellan/ca/store"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// adminService implements castellan.admin.v1.AdminService. Callers are
// authenticated by the transport: the admin socket's peer-credential check,
// or the admin-identity gate on the TCP port.
type adminService struct {
	adminv1.UnimplementedAdminServiceServer
	s *Server
}

// CreateJoinToken creates a one-time join token for a node.
func (a *adminService) CreateJoinToken(ctx context.Context, req *adminv1.CreateJoinTokenRequest) (*adminv1.CreateJoinTokenResponse, error) {
	ttl := time.Duration(req.GetTtlSeconds()) * time.Second
	if req.GetTtlSeconds() < 0 || req.GetTtlSeconds() > int64(24*365*time.Hour/time.Second) {
		return nil, status.Errorf(codes.InvalidArgument, "server: join token TTL %ds is out of range", req.GetTtlSeconds())
	}
	token, exp, err := a.s.cfg.Tokens.Create(ctx, req.GetNode(), ttl)
	if err != nil {
		if ctx.Err() != nil {
			return nil, status.FromContextError(ctx.Err()).Err()
		}
		if errors.Is(err, store.ErrUnavailable) {
			a.s.log.WarnContext(ctx, "join token not created: the registry store is unavailable", "error", err.Error())
			return nil, edge.StoreStatus(err, "join tokens")
		}
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	a.s.log.InfoContext(ctx, "join token created", "node", req.GetNode(), "expires_at", exp)
	return &adminv1.CreateJoinTokenResponse{Token: token, Node: req.GetNode(), ExpiresAt: timestamppb.New(exp)}, nil
}

// CreateEntry stores a registration entry.
func (a *adminService) CreateEntry(ctx context.Context, req *adminv1.CreateEntryRequest) (*adminv1.CreateEntryResponse, error) {
	ent, err := a.s.cfg.Entries.Create(ctx, req.GetEntry())
	if err != nil {
		return nil, err
	}
	a.s.log.InfoContext(ctx, "entry created", "id", ent.Id, "spiffe_id", ent.SpiffeId, "node", ent.Node)
	return &adminv1.CreateEntryResponse{Entry: ent}, nil
}

// ListEntries lists entries, optionally of one node.
func (a *adminService) ListEntries(_ context.Context, req *adminv1.ListEntriesRequest) (*adminv1.ListEntriesResponse, error) {
	return &adminv1.ListEntriesResponse{Entries: a.s.cfg.Entries.List(req.GetNode())}, nil
}

// DeleteEntry deletes an entry.
func (a *adminService) DeleteEntry(ctx context.Context, req *adminv1.DeleteEntryRequest) (*adminv1.DeleteEntryResponse, error) {
	if err := a.s.cfg.Entries.Delete(ctx, req.GetId()); err != nil {
		if errors.Is(err, authz.ErrNotFound) {
			return nil, status.Errorf(codes.NotFound, "server: no registration entry with ID %q; list them with `castellanctl entry list`", req.GetId())
		}
		return nil, err
	}
	a.s.log.InfoContext(ctx, "entry deleted", "id", req.GetId())
	return &adminv1.DeleteEntryResponse{}, nil
}
