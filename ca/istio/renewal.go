package istio

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/castellan-dev/castellan/ca/authn"
	"github.com/castellan-dev/castellan/ca/authz"
	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/internal/k8sid"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"
)

// MaxRenewalGenerations bounds the lineage of a certificate renewed with
// itself: a client certificate that descends from more than this many
// certificates renewed the same way is refused, so every lineage walk is
// bounded and a workload goes back to its node agent (or a Kubernetes
// token) at least every MaxRenewalGenerations renewals.
const MaxRenewalGenerations = 64

// Ledger is what the Istio endpoint needs of the issuance ledger
// (*ledger.Ledger).
type Ledger interface {
	// Get returns the issuance entry of a serial (ledger.ErrNotFound).
	Get(ctx context.Context, serial string) (entry.Entry, error)
	// RevokedAncestor returns the first revoked certificate among serial
	// and up to max of its ancestors, and whether the lineage is longer.
	RevokedAncestor(ctx context.Context, serial string, max int, now time.Time) (entry.Entry, bool, bool, error)
}

// checkLineage returns the ledger entry of a client certificate, refusing
// one the ledger does not hold, a revoked one, one descended from a revoked
// certificate, and one whose lineage is longer than MaxRenewalGenerations.
func (s *Service) checkLineage(ctx context.Context, id spiffeid.ID, serial string) (entry.Entry, error) {
	cert, err := s.cfg.Ledger.Get(ctx, serial)
	switch {
	case errors.Is(err, entry.ErrNotFound) || err == nil && cert.SPIFFEID != id.String():
		return entry.Entry{}, authn.Fail(ReasonCertNotLogged, "client certificate %s (serial %s) is not in the CA's ledger; obtain a certificate from the node agent", id, serial)
	case err != nil:
		return entry.Entry{}, fmt.Errorf("istio: look up serial %s: %w", serial, err)
	case cert.Revoked != nil:
		return entry.Entry{}, authn.Fail(ReasonCertRevoked, "client certificate %s (serial %s) is revoked", id, serial)
	}
	rev, found, truncated, err := s.cfg.Ledger.RevokedAncestor(ctx, serial, MaxRenewalGenerations, s.clock.Now())
	switch {
	case err != nil:
		return entry.Entry{}, fmt.Errorf("istio: lineage of serial %s: %w", serial, err)
	case found:
		return entry.Entry{}, authz.Deny(ReasonLineageRevoked, "client certificate %s (serial %s) descends from certificate %s, which is revoked; obtain a new certificate from the node agent",
			id, serial, rev.Serial)
	case truncated:
		return entry.Entry{}, authz.Deny(ReasonLineageTooLong, "client certificate %s (serial %s) was renewed with its own certificates more than %d times in a row; obtain a new certificate from the node agent or with a Kubernetes token",
			id, serial, MaxRenewalGenerations)
	}
	return cert, nil
}

// authorizeRenewal decides, as for an agent's request, whether the holder
// of c's certificate may still obtain c.id on the node the certificate was
// issued to: a registration entry must assign it there (its TTL is the
// ceiling of the new certificate's), or, on Kubernetes, a live pod of its
// service account must run there.
func (s *Service) authorizeRenewal(ctx context.Context, c caller) (authz.Grant, error) {
	node := c.cert.Node
	if node == "" {
		return authz.Grant{}, authz.Deny(ReasonNotAssigned, "renewal of %s refused: the ledger records no node for serial %s; obtain a certificate from the node agent", c.id, c.cert.Serial)
	}
	grant, err := s.cfg.Authorizer.Authorize(ctx, authz.Request{Node: node, ID: c.id})
	if err != nil {
		if s.livePodOf(node, c.id) {
			return authz.Grant{}, nil
		}
		return authz.Grant{}, authz.Deny(ReasonNotAssigned, "renewal of %s refused: the identity is no longer assigned to node %q, where serial %s was issued: %w", c.id, node, c.cert.Serial, err)
	}
	// The grant carries the entry's TTL: the server's issue path applies it
	// as the ceiling (ca/server svidTTL), as for agents' requests.
	return grant, nil
}

// livePodOf reports whether a live pod of id's service account runs on
// node (false without a pod lister or for an ID that is not
// spiffe://<td>/ns/<ns>/sa/<sa>).
func (s *Service) livePodOf(node string, id spiffeid.ID) bool {
	if s.cfg.Pods == nil {
		return false
	}
	acct, err := k8sid.FromID(id)
	if err != nil {
		return false
	}
	return slices.ContainsFunc(s.cfg.Pods.OnNode(node), func(p *corev1.Pod) bool {
		return k8sid.RunsAs(p, node, acct)
	})
}
