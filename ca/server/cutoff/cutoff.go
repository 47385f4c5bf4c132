// Package cutoff cuts off the callers the CA no longer serves: an agent
// certificate of a banned node, and any revoked client certificate, are
// refused on every call (a gRPC interceptor, and the long-lived streams
// at every change); certificates recorded for a node banned meanwhile are
// revoked and withheld; and at start, a crash between a ban and its
// revocations is repaired.
package cutoff

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/castellan-dev/castellan/internal/clock"

	"github.com/castellan-dev/castellan/ca/authn"
	"github.com/castellan-dev/castellan/ca/ledger/agents"
	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/ca/ledger/revocation"
	"github.com/castellan-dev/castellan/ca/refusal"
	"github.com/castellan-dev/castellan/internal/serial"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// Ledger is what the cut-off needs of the issuance ledger
// (*ledger.Ledger): the durable record of node agents, node bans (ledger
// events) and revocations.
type Ledger interface {
	// Banned returns the ban in force for node; cheap enough per call.
	Banned(node string) (agents.Ban, bool)
	// RevokeNodeCertificates revokes the unexpired certificates of node if
	// it is banned (for issuances that raced with the ban).
	RevokeNodeCertificates(ctx context.Context, node string) ([]string, error)
	// Agents describes the node agents the ledger knows.
	Agents(ctx context.Context) ([]agents.Agent, error)
	// IsRevoked reports whether the certificate with this serial is
	// revoked and unexpired at now.
	IsRevoked(serial string, now time.Time) bool
	// Revoke revokes one certificate (revocation.ErrAlreadyRevoked if it was).
	Revoke(ctx context.Context, serial, reason string) (entry.Entry, error)
}

// Config configures a Guard; Ledger is required.
type Config struct {
	Ledger Ledger
	// TrustDomain is the CA's: agent SVIDs name their node in it.
	TrustDomain spiffeid.TrustDomain
	// Clock returns the current time (nil: time.Now).
	Clock clock.Clock
	// Logger receives the revocations it makes (nil: discard).
	Logger *slog.Logger
}

// Guard refuses banned nodes and revoked certificates.
type Guard struct {
	ledger Ledger
	td     spiffeid.TrustDomain
	clock  clock.Clock
	log    *slog.Logger
}

// New returns the Guard of cfg.
func New(cfg Config) *Guard {
	g := &Guard{ledger: cfg.Ledger, td: cfg.TrustDomain, clock: clock.OrSystem(cfg.Clock), log: cfg.Logger}
	if g.log == nil {
		g.log = slog.New(slog.DiscardHandler)
	}
	return g
}

// ReasonNodeBanned counts refusals of banned nodes in castellan_csr_total.
const ReasonNodeBanned = "node_banned"

// bannedError is the refusal of a banned node: PermissionDenied, naming
// the node and the ban.
func bannedError(b agents.Ban) *refusal.Error {
	return refusal.Errorf(codes.PermissionDenied, ReasonNodeBanned,
		"server: node %q is banned (since %s, ledger entry %d: %q); its agent certificates and attestations are refused. "+
			"After re-imaging the node, an operator can lift the ban with `castellanctl agent unban %s --reason ...` and attest it with a new join token",
		b.Node, b.Time.UTC().Format(time.RFC3339), b.Index, b.Reason, b.Node)
}

// CheckNode refuses node if it is banned ("": no node, allowed).
func (g *Guard) CheckNode(node string) error {
	if node == "" {
		return nil
	}
	if b, ok := g.ledger.Banned(node); ok {
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

// RefusePeer refuses a caller whose verified client certificate (agent or
// admin SVID) is revoked (Unauthenticated) or is an agent SVID of a banned
// node (PermissionDenied). Calls without a client certificate pass; the
// handlers decide whether they need one.
func (g *Guard) RefusePeer(ctx context.Context) error {
	leaf := PeerCertificate(ctx)
	if leaf == nil {
		return nil
	}
	id, idErr := x509svid.IDFromCert(leaf)
	if idErr == nil {
		if node, err := authn.NodeOf(g.td, id); err == nil {
			if err := g.CheckNode(node); err != nil {
				return err
			}
		}
	}
	serial := serial.FromBig(leaf.SerialNumber).String()
	if !g.ledger.IsRevoked(serial, g.clock.Now()) {
		return nil
	}
	name := "(no SPIFFE ID)"
	if idErr == nil {
		name = id.String()
	}
	return status.Errorf(codes.Unauthenticated,
		"client certificate %s (serial %s) has been revoked; attest this agent again with a new join token", name, serial)
}

// RefuseIfBannedAfterRecord closes the race between a ban and an issuance
// in flight: the certificates were recorded for node, and if node is
// banned now they are revoked at once and withheld. It returns the
// refusal, or nil when node is not banned.
func (g *Guard) RefuseIfBannedAfterRecord(ctx context.Context, node string) error {
	err := g.CheckNode(node)
	if err == nil {
		return nil
	}
	if _, rerr := g.ledger.RevokeNodeCertificates(ctx, node); rerr != nil {
		g.log.ErrorContext(ctx, "revoking certificates issued to a banned node failed", "node", node, "error", rerr.Error())
	}
	return err
}

// Reconcile revokes, for every banned node, certificates that a crash
// between a ban and its revocations left unrevoked.
func (g *Guard) Reconcile(ctx context.Context) error {
	agents, err := g.ledger.Agents(ctx)
	if err != nil {
		return fmt.Errorf("server: read agents: %w", err)
	}
	for _, a := range agents {
		if a.Ban == nil {
			continue
		}
		revoked, err := g.ledger.RevokeNodeCertificates(ctx, a.Node)
		if err != nil {
			return fmt.Errorf("server: revoke certificates of banned node %s: %w", a.Node, err)
		}
		if len(revoked) > 0 {
			g.log.WarnContext(ctx, "revoked certificates of a banned node", "node", a.Node, "serials", revoked)
		}
	}
	return nil
}

// RefuseAfterRenewal closes the races of a renewal recorded while its
// node was banned or its parent revoked (with its descendants): the new
// certificate is revoked and withheld.
func (g *Guard) RefuseAfterRenewal(ctx context.Context, node, parent, child string) error {
	if err := g.RefuseIfBannedAfterRecord(ctx, node); err != nil {
		return err
	}
	if !g.ledger.IsRevoked(parent, g.clock.Now()) {
		return nil
	}
	if _, err := g.ledger.Revoke(ctx, child, "parent "+parent+" revoked"); err != nil && !errors.Is(err, revocation.ErrAlreadyRevoked) {
		g.log.ErrorContext(ctx, "revoking the renewal of a revoked certificate failed", "serial", child, "error", err.Error())
	}
	return status.Errorf(codes.Unauthenticated,
		"client certificate (serial %s) was revoked while it was being renewed; attest this agent again with a new join token", parent)
}
