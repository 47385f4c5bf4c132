package server

import (
	"slices"
	"sync"

	cav1 "github.com/castellan-dev/castellan/api/castellan/ca/v1"
	"github.com/castellan-dev/castellan/ca/authn"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"google.golang.org/protobuf/proto"
)

// bundleState is the published trust bundle, the tainted authorities
// (DER signing certificates) and a channel closed when either changes.
type bundleState struct {
	mu      sync.Mutex
	pb      *cav1.Bundle
	tainted [][]byte
	changed chan struct{}
}

func newBundleState(b *x509bundle.Bundle) *bundleState {
	st := &bundleState{changed: make(chan struct{})}
	st.pb = bundleProto(b, 1)
	return st
}

func bundleProto(b *x509bundle.Bundle, seq uint64) *cav1.Bundle {
	pb := &cav1.Bundle{TrustDomain: b.TrustDomain().Name(), Sequence: seq}
	for _, c := range b.X509Authorities() {
		pb.X509Authorities = append(pb.X509Authorities, c.Raw)
	}
	return pb
}

// current returns the bundle; callers must not modify it.
func (b *bundleState) current() *cav1.Bundle {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.pb
}

// watch returns the bundle and a channel closed at its next change (or
// the tainted authorities').
func (b *bundleState) watch() (*cav1.Bundle, <-chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.pb, b.changed
}

// watchAll is watch with the tainted authorities.
func (b *bundleState) watchAll() (*cav1.Bundle, [][]byte, <-chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.pb, b.tainted, b.changed
}

// set publishes a new bundle (CA rotation) with the next sequence number.
func (b *bundleState) set(nb *x509bundle.Bundle) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.pb = bundleProto(nb, b.pb.Sequence+1)
	close(b.changed)
	b.changed = make(chan struct{})
}

// SetBundle publishes a new trust bundle to WatchBundle and SyncAgent
// streams, e.g. when a new root is introduced during CA rotation.
func (s *Server) SetBundle(b *x509bundle.Bundle) { s.bundle.set(b) }

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
		bundle, tainted, bundleChanged := s.bundle.watchAll()
		revoked := s.cfg.Ledger.RevokedSerials(s.clock())
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
