package server

import (
	"context"
	"runtime"
	"sync"
	"time"

	cav1 "github.com/castellan-dev/castellan/api/castellan/ca/v1"
	"github.com/castellan-dev/castellan/ca/authn"
	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/ca/refusal"
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
	if n := len(req.GetCsr()); n > MaxCSRBytes {
		return nil, refuse(codes.InvalidArgument, reasonCSRTooLarge, "CSR is %d bytes; at most %d are accepted", n, MaxCSRBytes)
	}
	csr, err := a.ParseAgentCSR(req.GetCsr())
	if err != nil {
		return nil, err
	}
	node, err := s.cfg.Attestor.Attest(ctx, req)
	if err == nil {
		err = s.checkNodeBan(node)
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
	events := []entry.Event{issuanceEvent(entry.KindIssuance, iss, node, "agent attestation")}
	if _, ok := req.GetAttestation().(*cav1.AttestAgentRequest_JoinToken); ok {
		events = append([]entry.Event{{Kind: entry.KindJoinTokenUse, Node: node, SPIFFEID: id.String()}}, events...)
	}
	if _, err := s.cfg.Ledger.Append(ctx, events...); err != nil {
		s.log.ErrorContext(ctx, "ledger append failed; agent SVID withheld", "node", node, "error", err.Error())
		return nil, refusal.Failure(codes.Unavailable, "server: the issuance ledger is unavailable; no SVID was issued and the join token is spent, create a new one and retry", err)
	}
	if err := s.refuseIfBannedAfterRecord(ctx, node); err != nil {
		return nil, err
	}
	s.log.InfoContext(ctx, "agent attested", "node", node, "spiffe_id", id.String(), "serial", serial.FromBig(iss.Serial).String())
	return &cav1.AttestAgentResponse{Svid: svidProto(iss), Bundle: s.bundle.current()}, nil
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
	leaf := PeerCertificate(ctx)
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
	ev := issuanceEvent(entry.KindRenewal, iss, node, "agent renewal")
	ev.Parent = serial.FromBig(leaf.SerialNumber).String()
	if _, err := s.cfg.Ledger.Append(ctx, ev); err != nil {
		s.log.ErrorContext(ctx, "ledger append failed; agent SVID withheld", "node", node, "error", err.Error())
		return nil, refusal.Failure(codes.Unavailable, "server: the issuance ledger is unavailable; no SVID was issued, retry later", err)
	}
	if err := s.refuseAfterRenewal(ctx, node, ev.Parent, ev.Serial); err != nil {
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
	it := &issuance{req: req}
	if err := s.issue(ctx, node, []*issuance{it}); err != nil {
		return nil, err
	}
	if it.err != nil {
		return nil, it.err
	}
	return &cav1.SignX509SVIDResponse{Svid: withLogIndex(svidProto(it.issued), it.logIndex)}, nil
}

// minParallelBatch is the batch size from which signing is spread over
// the CPUs.
const minParallelBatch = 8

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
	items := make([]*issuance, len(req.GetRequests()))
	for i, r := range req.GetRequests() {
		items[i] = &issuance{req: r}
	}
	if err := s.issue(ctx, node, items); err != nil {
		return nil, err
	}
	s.countEach(ctx, items)
	resp := &cav1.BatchSignX509SVIDResponse{Results: make([]*cav1.BatchResult, len(items))}
	for i, it := range items {
		if it.err != nil {
			st := status.Convert(s.statusOf(ctx, cav1.CertificateAuthorityService_BatchSignX509SVID_FullMethodName, it.err))
			resp.Results[i] = &cav1.BatchResult{Result: &cav1.BatchResult_Error{
				Error: &cav1.Error{Code: int32(st.Code()), Message: st.Message()}}}
			continue
		}
		resp.Results[i] = &cav1.BatchResult{Result: &cav1.BatchResult_Svid{Svid: withLogIndex(svidProto(it.issued), it.logIndex)}}
	}
	return resp, nil
}

// issue admits items (admit.go), prepares and records them, and gives
// their room back. The error is the refusal of the whole call when the CA
// has no room for it (nothing was signed); the items' own outcomes are in
// their err.
func (s *Server) issue(ctx context.Context, node string, items []*issuance) error {
	w, err := s.admit.acquire(ctx, len(items))
	if err != nil {
		return err
	}
	defer s.admit.release(w)
	s.prepareAll(ctx, node, items)
	_ = s.record(ctx, node, items)
	return nil
}

// prepareAll prepares items, spread over the CPUs for large batches.
func (s *Server) prepareAll(ctx context.Context, node string, items []*issuance) {
	workers := runtime.GOMAXPROCS(0)
	if len(items) < minParallelBatch || workers == 1 {
		for _, it := range items {
			s.prepare(ctx, node, it)
		}
		return
	}
	var wg sync.WaitGroup
	chunk := (len(items) + workers - 1) / workers
	for lo := 0; lo < len(items); lo += chunk {
		part := items[lo:min(lo+chunk, len(items))]
		wg.Go(func() {
			for _, it := range part {
				s.prepare(ctx, node, it)
			}
		})
	}
	wg.Wait()
}

// errShuttingDown ends long-lived streams when the server stops.
var errShuttingDown = status.Error(codes.Unavailable, "server: the CA is shutting down; reconnect")

// GetBundle returns the trust bundle to a verified agent.
func (c *caService) GetBundle(ctx context.Context, _ *cav1.GetBundleRequest) (*cav1.GetBundleResponse, error) {
	if _, err := authn.PeerNode(ctx, c.s.td); err != nil {
		return nil, err
	}
	return &cav1.GetBundleResponse{Bundle: c.s.bundle.current()}, nil
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
		if err := c.s.refusePeer(ctx); err != nil {
			return err
		}
		b, changed := c.s.bundle.watch()
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
