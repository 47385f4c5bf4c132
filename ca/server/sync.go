package server

import (
	"slices"

	cav1 "github.com/castellan-dev/castellan/api/castellan/ca/v1"
	"github.com/castellan-dev/castellan/ca/authn"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"google.golang.org/protobuf/proto"
)

// SetBundle publishes a new trust bundle to WatchBundle and SyncAgent
// streams, e.g. when a new root is introduced during CA rotation.
func (s *Server) SetBundle(b *x509bundle.Bundle) { s.bundle.Set(b) }

// SyncAgent streams the calling agent's state: at once, then after every
// change to its entries, the bundle, the tainted authorities or the
// revocations. Changes that leave
// the agent's state as it was (e.g. an entry of another node) send nothing.
// The stream ends with the gate's refusal as soon as the caller's node is
// banned or its certificate revoked.
func (c *caService) SyncAgent(_ *cav1.SyncAgentRequest, stream cav1.CertificateAuthorityService_SyncAgentServer) error {
	ctx := stream.Context()
	s := c.s
	node, err := authn.PeerNode(ctx, s.td)
	if err != nil {
		return err
	}
	var last *cav1.AgentState
	for {
		entriesChanged := s.cfg.Entries.Changed()
		revChanged := s.cfg.Ledger.RevocationsChanged()
		bansChanged := s.cfg.Ledger.BansChanged()
		if err := s.cutoff.RefusePeer(ctx); err != nil {
			s.log.WarnContext(ctx, "SyncAgent stream closed", "node", node, "error", err.Error())
			return err
		}
		bundle, tainted, bundleChanged := s.bundle.WatchAll()
		revoked := s.cfg.Ledger.RevokedSerials(s.clock.Now())
		slices.Sort(revoked)
		st := &cav1.AgentState{Entries: s.cfg.Entries.List(node), Bundle: bundle, RevokedSerials: revoked,
			TaintedAuthorities: tainted}
		if last == nil || !proto.Equal(st, last) {
			if err := stream.Send(&cav1.SyncAgentResponse{State: st}); err != nil {
				return err
			}
			last = st
		}
		select {
		case <-ctx.Done():
			return nil
		case <-s.stopping:
			return errShuttingDown
		case <-entriesChanged:
		case <-revChanged:
		case <-bansChanged:
		case <-bundleChanged:
		}
	}
}
