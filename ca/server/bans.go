package server

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/castellan-dev/castellan/ca/authn"
	"github.com/castellan-dev/castellan/ca/ledger/agents"
	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/ca/ledger/revocation"
	"github.com/castellan-dev/castellan/ca/refusal"
	"github.com/castellan-dev/castellan/internal/serial"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// Bans is the durable record of node agents and node bans
// (*ledger.Ledger, where a ban is a ledger event). A banned node's agent
// certificates are refused on every call and its certificates revoked.
type Bans interface {
	// Ban records a ban of node and revokes every unexpired certificate
	// issued to it, in one append (agents.ErrAlreadyBanned if banned).
	Ban(ctx context.Context, node, reason string) (agents.BanResult, error)
	// Unban lifts a ban (agents.ErrNotBanned if none); revoked
	// certificates stay revoked.
	Unban(ctx context.Context, node, reason string) (entry.Entry, error)
	// Banned returns the ban in force for node; cheap enough per call.
	Banned(node string) (agents.Ban, bool)
	// BansChanged returns a channel closed at the next ban or unban.
	BansChanged() <-chan struct{}
	// RevokeNodeCertificates revokes the unexpired certificates of node if
	// it is banned (for issuances that raced with the ban).
	RevokeNodeCertificates(ctx context.Context, node string) ([]string, error)
	// Agents and Agent describe the node agents the ledger knows.
	Agents(ctx context.Context) ([]agents.Agent, error)
	Agent(ctx context.Context, node string) (agents.Agent, error)
}

// reasonNodeBanned counts refusals of banned nodes in castellan_csr_total.
const reasonNodeBanned = "node_banned"

// reasonRenewTooEarly counts agent renewals refused before half-life.
const reasonRenewTooEarly = "agent_renewal_too_early"

// bannedError is the refusal of a banned node: PermissionDenied, naming
// the node and the ban.
func bannedError(b agents.Ban) *refusal.Error {
	return refuse(codes.PermissionDenied, reasonNodeBanned,
		"node %q is banned (since %s, ledger entry %d: %q); its agent certificates and attestations are refused. "+
			"After re-imaging the node, an operator can lift the ban with `castellanctl agent unban %s --reason ...` and attest it with a new join token",
		b.Node, b.Time.UTC().Format(time.RFC3339), b.Index, b.Reason, b.Node)
}

// checkNodeBan refuses node if it is banned.
func (s *Server) checkNodeBan(node string) error {
	if node == "" {
		return nil
	}
	if b, ok := s.cfg.Ledger.Banned(node); ok {
		return bannedError(b)
	}
	return nil
}

// PeerCertificate returns the caller's verified client certificate, or nil
// when the call came without one (or not over TLS).
func PeerCertificate(ctx context.Context) *x509.Certificate {
	p, ok := peer.FromContext(ctx)
	if !ok || p.AuthInfo == nil {
		return nil
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 || len(info.State.VerifiedChains[0]) == 0 {
		return nil
	}
	return info.State.VerifiedChains[0][0]
}

// refusePeer refuses a caller whose verified client certificate (agent or
// admin SVID) is revoked (Unauthenticated) or is an agent SVID of a banned
// node (PermissionDenied). Calls without a client certificate pass; the
// handlers decide whether they need one.
func (s *Server) refusePeer(ctx context.Context) error {
	leaf := PeerCertificate(ctx)
	if leaf == nil {
		return nil
	}
	id, idErr := x509svid.IDFromCert(leaf)
	if idErr == nil {
		if node, err := authn.NodeOf(s.td, id); err == nil {
			if err := s.checkNodeBan(node); err != nil {
				return err
			}
		}
	}
	serial := serial.FromBig(leaf.SerialNumber).String()
	if !s.cfg.Ledger.IsRevoked(serial, s.clock()) {
		return nil
	}
	name := "(no SPIFFE ID)"
	if idErr == nil {
		name = id.String()
	}
	return status.Errorf(codes.Unauthenticated,
		"client certificate %s (serial %s) has been revoked; attest this agent again with a new join token", name, serial)
}

// earliestRenewal is when an agent SVID may be renewed: once half its
// lifetime (NotBefore to NotAfter) has passed. An agent renews at about
// half-life; a stolen agent key used to renew "at will" gets one renewal
// per half-lifetime of each certificate, and each renewal names its parent.
func earliestRenewal(leaf *x509.Certificate) time.Time {
	return leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) / 2)
}

// maxRenewals is how many times one agent SVID may be renewed: once, and
// once more for an agent that lost the answer to its first renewal. A
// third renewal of the same certificate means two holders renew it.
const maxRenewals = 2

// reasonRenewedTooOften counts renewals of an already twice-renewed SVID.
const reasonRenewedTooOften = "agent_renewed_too_often"

// checkRenewal refuses an agent renewal with leaf before its half-life
// (unless a tainted authority signed leaf: it must be replaced now), and
// a renewal of a certificate that was renewed maxRenewals times already; it
// warns at the second renewal of one certificate (two holders, or a lost
// answer).
func (s *Server) checkRenewal(ctx context.Context, node string, leaf *x509.Certificate) error {
	serial := serial.FromBig(leaf.SerialNumber).String()
	if at := earliestRenewal(leaf); s.clock().Before(at) && !s.underTaint(leaf) {
		return refuse(codes.ResourceExhausted, reasonRenewTooEarly,
			"agent SVID serial %s may be renewed from %s (half its lifetime), not before; retry then",
			serial, at.UTC().Format(time.RFC3339))
	}
	children, err := s.cfg.Ledger.Children(ctx, serial, maxRenewals)
	if err != nil {
		return status.Error(codes.Unavailable, "server: the issuance ledger is unavailable; retry later")
	}
	switch {
	case len(children) >= maxRenewals:
		s.log.WarnContext(ctx, "agent SVID renewed too often; possible stolen agent key", "node", node, "serial", serial, "renewals", children)
		return refuse(codes.ResourceExhausted, reasonRenewedTooOften,
			"agent SVID serial %s was already renewed %d times (serials %s); renew with the newest agent SVID. "+
				"If this agent lost it, attest again with a new join token; if not, another holder has this node's key: ban the node with `castellanctl agent ban %s`",
			serial, len(children), strings.Join(children, ", "), node)
	case len(children) == 1:
		s.log.WarnContext(ctx, "agent SVID renewed a second time; a lost answer, or a stolen agent key", "node", node, "serial", serial, "first_renewal", children[0])
	}
	return nil
}

// refuseIfBannedAfterRecord closes the race between a ban and an issuance
// in flight: the certificates were recorded for node, and if node is
// banned now they are revoked at once and withheld. It returns the
// refusal, or nil when node is not banned.
func (s *Server) refuseIfBannedAfterRecord(ctx context.Context, node string) error {
	err := s.checkNodeBan(node)
	if err == nil {
		return nil
	}
	if _, rerr := s.cfg.Ledger.RevokeNodeCertificates(ctx, node); rerr != nil {
		s.log.ErrorContext(ctx, "revoking certificates issued to a banned node failed", "node", node, "error", rerr.Error())
	}
	return err
}

// reconcileBans revokes, for every banned node, certificates that a crash
// between a ban and its revocations left unrevoked.
func (s *Server) reconcileBans(ctx context.Context) error {
	agents, err := s.cfg.Ledger.Agents(ctx)
	if err != nil {
		return fmt.Errorf("server: read agents: %w", err)
	}
	for _, a := range agents {
		if a.Ban == nil {
			continue
		}
		revoked, err := s.cfg.Ledger.RevokeNodeCertificates(ctx, a.Node)
		if err != nil {
			return fmt.Errorf("server: revoke certificates of banned node %s: %w", a.Node, err)
		}
		if len(revoked) > 0 {
			s.log.WarnContext(ctx, "revoked certificates of a banned node", "node", a.Node, "serials", revoked)
		}
	}
	return nil
}

// refuseAfterRenewal closes the races of a renewal recorded while its
// node was banned or its parent revoked (with its descendants): the new
// certificate is revoked and withheld.
func (s *Server) refuseAfterRenewal(ctx context.Context, node, parent, child string) error {
	if err := s.refuseIfBannedAfterRecord(ctx, node); err != nil {
		return err
	}
	if !s.cfg.Ledger.IsRevoked(parent, s.clock()) {
		return nil
	}
	if _, err := s.cfg.Ledger.Revoke(ctx, child, "parent "+parent+" revoked"); err != nil && !errors.Is(err, revocation.ErrAlreadyRevoked) {
		s.log.ErrorContext(ctx, "revoking the renewal of a revoked certificate failed", "serial", child, "error", err.Error())
	}
	return status.Errorf(codes.Unauthenticated,
		"client certificate (serial %s) was revoked while it was being renewed; attest this agent again with a new join token", parent)
}
