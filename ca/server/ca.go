package server

import (
	"context"
	"time"

	cav1 "github.com/castellan-dev/castellan/api/castellan/ca/v1"
	"github.com/castellan-dev/castellan/ca/authn"
	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/ca/refusal"
	"github.com/castellan-dev/castellan/ca/server/cutoff"
	"github.com/castellan-dev/castellan/ca/server/issuance"
	"github.com/castellan-dev/castellan/ca/server/logproof"
	"github.com/castellan-dev/castellan/internal/serial"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// caService implements castellan.ca.v1.CertificateAuthorityService.
type caService struct {
	cav1.UnimplementedCertificateAuthorityServiceServer
	s *Server
}

// callerNode returns the node of the calling agent.
func (c *caService) callerNode(ctx context.Context) (string, error) {
	return authn.PeerNode(ctx, c.s.td)
}

// AttestAgent validates the CSR first (so a bad CSR does not burn a join
// token), then attests the node, signs the agent SVID and records the
// attestation and the SVID in one ledger append.
func (c *caService) AttestAgent(ctx context.Context, req *cav1.AttestAgentRequest) (*cav1.AttestAgentResponse, error) {
	s := c.s
	a := s.cfg.Authority
	if err := issuance.CheckCSRSize(req.GetCsr()); err != nil {
		return nil, err
	}
	csr, err := a.ParseAgentCSR(req.GetCsr())
	if err != nil {
		return nil, err
	}
	node, err := s.cfg.Attestor.Attest(ctx, req)
	if err == nil {
		err = s.cutoff.CheckNode(node)
	}
	if err != nil {
		s.log.WarnContext(ctx, "agent attestation refused", "reason", refusal.ReasonOf(err), "error", err.Error())
		return nil, err
	}
	id, err := authn.AgentID(s.td, node)
	if err != nil {
		return nil, refusal.Failure(codes.Internal, "server: attestor returned an invalid node name", err)
	}
	start := time.Now()
	iss, err := a.Sign(ctx, csr, id, s.cfg.AgentTTL)
	if err != nil {
		return nil, err
	}
	s.metrics.observeSigning(time.Since(start))
	events := []entry.Event{issuance.Event(entry.KindIssuance, iss, node, "agent attestation")}
	if _, ok := req.GetAttestation().(*cav1.AttestAgentRequest_JoinToken); ok {
		events = append([]entry.Event{{Kind: entry.KindJoinTokenUse, Node: node, SPIFFEID: id.String()}}, events...)
	}
	if _, err := s.cfg.Ledger.Append(ctx, events...); err != nil {
		s.log.ErrorContext(ctx, "ledger append failed; agent SVID withheld", "node", node, "error", err.Error())
		return nil, refusal.Failure(codes.Unavailable, "server: the issuance ledger is unavailable; no SVID was issued and the join token is spent, create a new one and retry", err)
	}
	if err := s.cutoff.RefuseIfBannedAfterRecord(ctx, node); err != nil {
		return nil, err
	}
	s.log.InfoContext(ctx, "agent attested", "node", node, "spiffe_id", id.String(), "serial", serial.FromBig(iss.Serial).String())
	return &cav1.AttestAgentResponse{Svid: svidProto(iss), Bundle: s.bundle.Current()}, nil
}

// RenewAgent signs a new agent SVID for the calling agent, once the
// caller's agent SVID is past half its lifetime and was renewed at most
// once before, and records the caller's serial as the new one's parent.
func (c *caService) RenewAgent(ctx context.Context, req *cav1.RenewAgentRequest) (*cav1.RenewAgentResponse, error) {
	s := c.s
	node, err := c.callerNode(ctx)
	if err != nil {
		return nil, err
	}
	leaf := cutoff.PeerCertificate(ctx)
	if err := s.checkRenewal(ctx, node, leaf); err != nil {
		s.log.WarnContext(ctx, "agent renewal refused", "node", node, "error", err.Error())
		return nil, err
	}
	a := s.cfg.Authority
	csr, err := a.ParseAgentCSR(req.GetCsr())
	if err != nil {
		return nil, err
	}
	id, err := authn.AgentID(s.td, node)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	iss, err := a.Sign(ctx, csr, id, s.cfg.AgentTTL)
	if err != nil {
		return nil, err
	}
	s.metrics.observeSigning(time.Since(start))
	ev := issuance.Event(entry.KindRenewal, iss, node, "agent renewal")
	ev.Parent = serial.FromBig(leaf.SerialNumber).String()
	if _, err := s.cfg.Ledger.Append(ctx, ev); err != nil {
		s.log.ErrorContext(ctx, "ledger append failed; agent SVID withheld", "node", node, "error", err.Error())
		return nil, refusal.Failure(codes.Unavailable, "server: the issuance ledger is unavailable; no SVID was issued, retry later", err)
	}
	if err := s.cutoff.RefuseAfterRenewal(ctx, node, ev.Parent, ev.Serial); err != nil {
		return nil, err
	}
	return &cav1.RenewAgentResponse{Svid: svidProto(iss)}, nil
}

// SignX509SVID signs one workload SVID for the calling agent's node.
func (c *caService) SignX509SVID(ctx context.Context, req *cav1.SignX509SVIDRequest) (*cav1.SignX509SVIDResponse, error) {
	s := c.s
	node, err := c.callerNode(ctx)
	if err != nil {
		return nil, err
	}
	it := &issuance.Item{Req: req}
	if err := s.issuer.Issue(ctx, node, []*issuance.Item{it}); err != nil {
		return nil, err
	}
	if it.Err != nil {
		return nil, it.Err
	}
	return &cav1.SignX509SVIDResponse{Svid: withLogIndex(svidProto(it.Issued), it.LogIndex)}, nil
}

// BatchSignX509SVID signs many workload SVIDs; each request gets its own
// result, and all issued certificates go to the ledger in one append.
func (c *caService) BatchSignX509SVID(ctx context.Context, req *cav1.BatchSignX509SVIDRequest) (*cav1.BatchSignX509SVIDResponse, error) {
	s := c.s
	node, err := c.callerNode(ctx)
	if err != nil {
		return nil, err
	}
	if n := len(req.GetRequests()); n > s.cfg.MaxBatch {
		err := refuse(codes.InvalidArgument, reasonBatchTooLarge,
			"batch has %d requests; at most %d are accepted, split it", n, s.cfg.MaxBatch)
		return nil, err
	}
	items := make([]*issuance.Item, len(req.GetRequests()))
	for i, r := range req.GetRequests() {
		items[i] = &issuance.Item{Req: r}
	}
	if err := s.issuer.Issue(ctx, node, items); err != nil {
		return nil, err
	}
	s.edge.CountByItem(ctx)
	for _, it := range items {
		s.edge.Count(it.Err)
	}
	resp := &cav1.BatchSignX509SVIDResponse{Results: make([]*cav1.BatchResult, len(items))}
	for i, it := range items {
		if it.Err != nil {
			st := status.Convert(s.edge.Status(ctx, cav1.CertificateAuthorityService_BatchSignX509SVID_FullMethodName, it.Err))
			resp.Results[i] = &cav1.BatchResult{Result: &cav1.BatchResult_Error{
				Error: &cav1.Error{Code: int32(st.Code()), Message: st.Message()}}}
			continue
		}
		resp.Results[i] = &cav1.BatchResult{Result: &cav1.BatchResult_Svid{Svid: withLogIndex(svidProto(it.Issued), it.LogIndex)}}
	}
	return resp, nil
}

// GetLogProof serves an agent the proofs of its entries in the witnessed
// log (package logproof).
func (c *caService) GetLogProof(ctx context.Context, req *cav1.GetLogProofRequest) (*cav1.GetLogProofResponse, error) {
	if _, err := c.callerNode(ctx); err != nil {
		return nil, err
	}
	return logproof.Serve(c.s.cfg.Ledger, req)
}

// errShuttingDown ends long-lived streams when the server stops.
var errShuttingDown = status.Error(codes.Unavailable, "server: the CA is shutting down; reconnect")

// GetBundle returns the trust bundle to a verified agent.
func (c *caService) GetBundle(ctx context.Context, _ *cav1.GetBundleRequest) (*cav1.GetBundleResponse, error) {
	if _, err := authn.PeerNode(ctx, c.s.td); err != nil {
		return nil, err
	}
	return &cav1.GetBundleResponse{Bundle: c.s.bundle.Current()}, nil
}

// WatchBundle sends the bundle, then every change, until the caller leaves
// or its certificate is revoked or its node banned.
func (c *caService) WatchBundle(_ *cav1.WatchBundleRequest, stream cav1.CertificateAuthorityService_WatchBundleServer) error {
	ctx := stream.Context()
	if _, err := authn.PeerNode(ctx, c.s.td); err != nil {
		return err
	}
	var last *cav1.Bundle
	for {
		// A ban or revocation of the caller ends the stream.
		revChanged, bansChanged := c.s.cfg.Ledger.RevocationsChanged(), c.s.cfg.Ledger.BansChanged()
		if err := c.s.cutoff.RefusePeer(ctx); err != nil {
			return err
		}
		b, changed := c.s.bundle.Watch()
		if b != last {
			if err := stream.Send(&cav1.WatchBundleResponse{Bundle: b}); err != nil {
				return err
			}
			last = b
		}
		select {
		case <-ctx.Done():
			return nil
		case <-c.s.stopping:
			return errShuttingDown
		case <-changed:
		case <-revChanged:
		case <-bansChanged:
		}
	}
}
