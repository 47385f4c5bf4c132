// Package admin is the CA's admin API (castellan.admin.v1.AdminService:
// join tokens, registration entries, node agents and bans, the CA's
// authorities) and the gate that allows it on the CA's TCP port only to
// the configured admin identities. On the admin socket (package
// adminsock) the transport authenticates the caller.
package admin

import (
	"context"
	"errors"
	"log/slog"
	"time"

	adminv1 "github.com/castellan-dev/castellan/api/castellan/admin/v1"
	"github.com/castellan-dev/castellan/ca/authn"
	"github.com/castellan-dev/castellan/ca/authority"
	"github.com/castellan-dev/castellan/ca/authz"
	"github.com/castellan-dev/castellan/ca/ledger/agents"
	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/ca/server/edge"
	"github.com/castellan-dev/castellan/ca/store"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Ledger is what the admin API needs of the issuance ledger
// (*ledger.Ledger): the node agents it knows, and their bans.
type Ledger interface {
	// Agents and Agent describe the node agents the ledger knows.
	Agents(ctx context.Context) ([]agents.Agent, error)
	Agent(ctx context.Context, node string) (agents.Agent, error)
	// Ban records a ban of node and revokes every unexpired certificate
	// issued to it, in one append (ledger.ErrAlreadyBanned if banned).
	Ban(ctx context.Context, node, reason string) (agents.BanResult, error)
	// Unban lifts a ban (ledger.ErrNotBanned if none); revoked
	// certificates stay revoked.
	Unban(ctx context.Context, node, reason string) (entry.Entry, error)
}

// Config configures the admin API; every field but Logger is required.
type Config struct {
	Authority *authority.Authority
	Ledger    Ledger
	Tokens    *authn.JoinTokens
	Entries   *authz.Entries
	// Logger receives the log of every change (nil: discard).
	Logger *slog.Logger
}

// Service implements castellan.admin.v1.AdminService. Callers are
// authenticated by the transport: the admin socket's peer-credential check,
// or the admin-identity Gate on the TCP port.
type Service struct {
	adminv1.UnimplementedAdminServiceServer
	cfg Config
	log *slog.Logger
}

// New returns the admin API of cfg.
func New(cfg Config) *Service {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Service{cfg: cfg, log: log}
}

// Register adds the admin service to g.
func (a *Service) Register(g grpc.ServiceRegistrar) { adminv1.RegisterAdminServiceServer(g, a) }

// CreateJoinToken creates a one-time join token for a node.
func (a *Service) CreateJoinToken(ctx context.Context, req *adminv1.CreateJoinTokenRequest) (*adminv1.CreateJoinTokenResponse, error) {
	ttl := time.Duration(req.GetTtlSeconds()) * time.Second
	if req.GetTtlSeconds() < 0 || req.GetTtlSeconds() > int64(24*365*time.Hour/time.Second) {
		return nil, status.Errorf(codes.InvalidArgument, "server: join token TTL %ds is out of range", req.GetTtlSeconds())
	}
	token, exp, err := a.cfg.Tokens.Create(ctx, req.GetNode(), ttl)
	if err != nil {
		if ctx.Err() != nil {
			return nil, status.FromContextError(ctx.Err()).Err()
		}
		if errors.Is(err, store.ErrUnavailable) {
			a.log.WarnContext(ctx, "join token not created: the registry store is unavailable", "error", err.Error())
			return nil, edge.StoreStatus(err, "join tokens")
		}
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	a.log.InfoContext(ctx, "join token created", "node", req.GetNode(), "expires_at", exp)
	return &adminv1.CreateJoinTokenResponse{Token: token, Node: req.GetNode(), ExpiresAt: timestamppb.New(exp)}, nil
}

// CreateEntry stores a registration entry.
func (a *Service) CreateEntry(ctx context.Context, req *adminv1.CreateEntryRequest) (*adminv1.CreateEntryResponse, error) {
	ent, err := a.cfg.Entries.Create(ctx, req.GetEntry())
	if err != nil {
		return nil, err
	}
	a.log.InfoContext(ctx, "entry created", "id", ent.Id, "spiffe_id", ent.SpiffeId, "node", ent.Node)
	return &adminv1.CreateEntryResponse{Entry: ent}, nil
}

// ListEntries lists entries, optionally of one node.
func (a *Service) ListEntries(_ context.Context, req *adminv1.ListEntriesRequest) (*adminv1.ListEntriesResponse, error) {
	return &adminv1.ListEntriesResponse{Entries: a.cfg.Entries.List(req.GetNode())}, nil
}

// DeleteEntry deletes an entry.
func (a *Service) DeleteEntry(ctx context.Context, req *adminv1.DeleteEntryRequest) (*adminv1.DeleteEntryResponse, error) {
	if err := a.cfg.Entries.Delete(ctx, req.GetId()); err != nil {
		if errors.Is(err, authz.ErrNotFound) {
			return nil, status.Errorf(codes.NotFound, "server: no registration entry with ID %q; list them with `castellanctl entry list`", req.GetId())
		}
		return nil, err
	}
	a.log.InfoContext(ctx, "entry deleted", "id", req.GetId())
	return &adminv1.DeleteEntryResponse{}, nil
}
