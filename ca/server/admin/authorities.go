package admin

import (
	"context"
	"crypto/x509"
	"errors"
	"time"

	adminv1 "github.com/castellan-dev/castellan/api/castellan/admin/v1"
	"github.com/castellan-dev/castellan/ca/authority/journal"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// The admin API's authority RPCs drive the CA's authority journal by hand
// (castellanctl authority ...). Refusals are the authority package's
// TransitionError: FailedPrecondition (or NotFound) with its explanation.

// ListAuthorities lists every authority of the journal, oldest first.
func (a *Service) ListAuthorities(ctx context.Context, _ *adminv1.ListAuthoritiesRequest) (*adminv1.ListAuthoritiesResponse, error) {
	infos, err := a.cfg.Authority.Authorities(ctx)
	if err != nil {
		return nil, err
	}
	if infos == nil {
		return nil, status.Error(codes.FailedPrecondition,
			"server: this CA runs without an authority journal (a fixed CA): it has no authorities to list and cannot rotate")
	}
	out := make([]*adminv1.Authority, 0, len(infos))
	for _, in := range infos {
		out = append(out, authorityProto(in))
	}
	return &adminv1.ListAuthoritiesResponse{Authorities: out}, nil
}

// PrepareAuthority prepares the next authority.
func (a *Service) PrepareAuthority(ctx context.Context, req *adminv1.PrepareAuthorityRequest) (*adminv1.PrepareAuthorityResponse, error) {
	in, err := a.cfg.Authority.Prepare(ctx, req.GetNewRoot())
	if err != nil {
		return nil, a.transitionError(ctx, "prepare", "", err)
	}
	a.log.InfoContext(ctx, "authority prepared by an operator", "authority", in.ID, "new_root", req.GetNewRoot())
	return &adminv1.PrepareAuthorityResponse{Authority: authorityProto(in)}, nil
}

// ActivateAuthority activates a prepared authority.
func (a *Service) ActivateAuthority(ctx context.Context, req *adminv1.ActivateAuthorityRequest) (*adminv1.ActivateAuthorityResponse, error) {
	if err := requireID(req.GetId()); err != nil {
		return nil, err
	}
	in, err := a.cfg.Authority.Activate(ctx, req.GetId(), req.GetForce())
	if err != nil {
		return nil, a.transitionError(ctx, "activate", req.GetId(), err)
	}
	a.log.InfoContext(ctx, "authority activated by an operator", "authority", in.ID, "force", req.GetForce())
	return &adminv1.ActivateAuthorityResponse{Authority: authorityProto(in)}, nil
}

// TaintAuthority taints an old authority.
func (a *Service) TaintAuthority(ctx context.Context, req *adminv1.TaintAuthorityRequest) (*adminv1.TaintAuthorityResponse, error) {
	if err := requireID(req.GetId()); err != nil {
		return nil, err
	}
	in, err := a.cfg.Authority.Taint(ctx, req.GetId())
	if err != nil {
		return nil, a.transitionError(ctx, "taint", req.GetId(), err)
	}
	a.log.WarnContext(ctx, "authority tainted by an operator: agents replace every SVID under it", "authority", in.ID)
	return &adminv1.TaintAuthorityResponse{Authority: authorityProto(in)}, nil
}

// RevokeAuthority revokes an authority.
func (a *Service) RevokeAuthority(ctx context.Context, req *adminv1.RevokeAuthorityRequest) (*adminv1.RevokeAuthorityResponse, error) {
	if err := requireID(req.GetId()); err != nil {
		return nil, err
	}
	in, err := a.cfg.Authority.Revoke(ctx, req.GetId(), req.GetForce())
	if err != nil {
		return nil, a.transitionError(ctx, "revoke", req.GetId(), err)
	}
	a.log.WarnContext(ctx, "authority revoked by an operator: its root left the trust bundle", "authority", in.ID, "force", req.GetForce())
	return &adminv1.RevokeAuthorityResponse{Authority: authorityProto(in)}, nil
}

func requireID(id string) error {
	if id == "" {
		return status.Error(codes.InvalidArgument, "server: the authority ID is required (list them with castellanctl authority list)")
	}
	return nil
}

// transitionError passes a refusal on with its status (FailedPrecondition
// or NotFound, and the authority package's explanation) and hides any
// other failure behind Unavailable: the journal or the ledger failed, and
// the transition was not made.
func (a *Service) transitionError(ctx context.Context, op, id string, err error) error {
	var te *journal.TransitionError
	if errors.As(err, &te) {
		a.log.InfoContext(ctx, "authority transition refused", "op", op, "authority", id, "reason", te.Msg)
		return te.GRPCStatus().Err()
	}
	if ctx.Err() != nil {
		return status.FromContextError(ctx.Err()).Err()
	}
	a.log.ErrorContext(ctx, "authority transition failed", "op", op, "authority", id, "error", err.Error())
	return status.Errorf(codes.Unavailable, "server: the %s transition was not made: %v", op, err)
}

// authorityProto converts a journal.Info to its API form.
func authorityProto(in journal.Info) *adminv1.Authority {
	return &adminv1.Authority{
		Id: in.ID, State: string(in.State), Source: string(in.Source),
		Chain: derOf(in.Chain), Roots: derOf(in.Roots),
		PreparedAt: optTS(in.PreparedAt), ActivatedAt: optTS(in.ActivatedAt), DeactivatedAt: optTS(in.DeactivatedAt),
		TaintedAt: optTS(in.TaintedAt), RevokedAt: optTS(in.RevokedAt), RootPublishedAt: optTS(in.RootPublishedAt),
		ActivatableAt: optTS(in.ActivatableAt), LeavesExpireBy: optTS(in.LeavesExpireBy),
	}
}

func derOf(certs []*x509.Certificate) [][]byte {
	out := make([][]byte, 0, len(certs))
	for _, c := range certs {
		out = append(out, c.Raw)
	}
	return out
}

// optTS is nil for the zero time.
func optTS(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}
