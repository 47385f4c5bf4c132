package server

// Renewal of agent SVIDs: when an agent may renew, and how often one
// certificate may be renewed.

import (
	"context"
	"crypto/x509"
	"strings"
	"time"

	"github.com/castellan-dev/castellan/internal/serial"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// reasonRenewTooEarly counts agent renewals refused before half-life.
const reasonRenewTooEarly = "agent_renewal_too_early"

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
	if at := earliestRenewal(leaf); s.clock.Now().Before(at) && !s.bundle.UnderTaint(leaf) {
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
