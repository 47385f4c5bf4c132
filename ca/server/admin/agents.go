package admin

import (
	"context"
	"strings"

	adminv1 "github.com/castellan-dev/castellan/api/castellan/admin/v1"
	"github.com/castellan-dev/castellan/ca/authn"
	"github.com/castellan-dev/castellan/ca/ledger"
	"github.com/castellan-dev/castellan/ca/ledger/agents"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// agentProto converts a ledger agent record.
func agentProto(a agents.Agent) *adminv1.Agent {
	pb := &adminv1.Agent{Node: a.Node, SpiffeId: a.SPIFFEID, Serial: a.Serial,
		NotAfter: optTS(a.NotAfter), FirstSeen: optTS(a.FirstSeen), LastSeen: optTS(a.LastSeen)}
	if b := a.Ban; b != nil {
		pb.Banned, pb.BanReason, pb.BannedAt, pb.BanIndex = true, b.Reason, optTS(b.Time), b.Index
	}
	return pb
}

// ListAgents lists the node agents the ledger knows.
func (a *Service) ListAgents(ctx context.Context, _ *adminv1.ListAgentsRequest) (*adminv1.ListAgentsResponse, error) {
	agents, err := a.cfg.Ledger.Agents(ctx)
	if err != nil {
		return nil, ledgerStatus(err)
	}
	resp := &adminv1.ListAgentsResponse{Agents: make([]*adminv1.Agent, len(agents))}
	for i, ag := range agents {
		resp.Agents[i] = agentProto(ag)
	}
	return resp, nil
}

// GetAgent returns one node's agent.
func (a *Service) GetAgent(ctx context.Context, req *adminv1.GetAgentRequest) (*adminv1.GetAgentResponse, error) {
	if err := authn.ValidateNodeName(req.GetNode()); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	ag, err := a.cfg.Ledger.Agent(ctx, req.GetNode())
	if err != nil {
		return nil, ledgerStatus(err)
	}
	return &adminv1.GetAgentResponse{Agent: agentProto(ag)}, nil
}

// BanAgent bans a node and revokes its unexpired certificates.
func (a *Service) BanAgent(ctx context.Context, req *adminv1.BanAgentRequest) (*adminv1.BanAgentResponse, error) {
	node, reason := req.GetNode(), strings.TrimSpace(req.GetReason())
	if err := authn.ValidateNodeName(node); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if reason == "" {
		return nil, status.Error(codes.InvalidArgument, "server: a ban needs a reason (it is written to the ledger)")
	}
	res, err := a.cfg.Ledger.Ban(ctx, node, reason)
	if err != nil {
		return nil, ledgerStatus(err)
	}
	a.log.WarnContext(ctx, "node banned", "node", node, "reason", reason, "index", res.Ban.Index,
		"revoked", len(res.Revoked))
	ag, err := a.cfg.Ledger.Agent(ctx, node)
	if err != nil {
		ag = agents.Agent{Node: node, Ban: &res.Ban}
	}
	return &adminv1.BanAgentResponse{Agent: agentProto(ag), RevokedSerials: res.Revoked}, nil
}

// UnbanAgent lifts a node's ban.
func (a *Service) UnbanAgent(ctx context.Context, req *adminv1.UnbanAgentRequest) (*adminv1.UnbanAgentResponse, error) {
	node, reason := req.GetNode(), strings.TrimSpace(req.GetReason())
	if err := authn.ValidateNodeName(node); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if reason == "" {
		return nil, status.Error(codes.InvalidArgument, "server: an unban needs a reason (it is written to the ledger)")
	}
	e, err := a.cfg.Ledger.Unban(ctx, node, reason)
	if err != nil {
		return nil, ledgerStatus(err)
	}
	a.log.WarnContext(ctx, "node unbanned", "node", node, "reason", reason, "index", e.Index)
	ag, err := a.cfg.Ledger.Agent(ctx, node)
	if err != nil {
		return nil, ledgerStatus(err)
	}
	return &adminv1.UnbanAgentResponse{Agent: agentProto(ag), UnbanIndex: e.Index}, nil
}

// ledgerStatus maps ledger errors of the agent calls to gRPC statuses
// (ledger.Status).
func ledgerStatus(err error) error { return ledger.Status("server", err) }
