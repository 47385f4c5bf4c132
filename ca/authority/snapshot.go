package authority

import (
	"crypto/x509"
	"slices"
)

// Snapshot is one consistent view of the CA: the authority that signs and
// the trust bundle, taken together. Chain's root is always among Roots, and
// every leaf signed after a snapshot was taken chains to a root of that
// snapshot or of a later one (a root leaves the bundle only when its
// authority is revoked, which is refused while it signs).
type Snapshot struct {
	// ActiveID is the ID of the signing authority ("" for a CA without
	// journal).
	ActiveID string
	// Chain is the signing certificate, then any further intermediates; no
	// root. It is what Sign appends to each leaf.
	Chain []*x509.Certificate
	// Root is the root Chain verifies to.
	Root *x509.Certificate
	// Roots is the trust bundle: every root of a prepared, active, old or
	// tainted authority.
	Roots []*x509.Certificate
	// Tainted are the signing certificates of tainted authorities: every
	// leaf whose chain includes one must be replaced now (agents renew
	// them, spread over a short window).
	Tainted []*x509.Certificate
	// Generation increases with every change of the signer or the bundle.
	Generation uint64
}

// Snapshot returns the current signing authority and trust bundle. The
// caller must not modify the certificates.
func (a *Authority) Snapshot() Snapshot {
	ca := a.keys()
	return Snapshot{
		ActiveID:   ca.ID,
		Chain:      slices.Clone(ca.Chain),
		Root:       ca.Root,
		Roots:      slices.Clone(ca.Roots),
		Tainted:    slices.Clone(ca.Tainted),
		Generation: ca.Gen,
	}
}

// Changed returns a channel closed at the next change of the signing
// authority, of the trust bundle or of the tainted authorities (by this process, or by another replica
// sharing the journal once Follow has read it). Call Snapshot after it
// fires, then Changed again.
func (a *Authority) Changed() <-chan struct{} { return a.cur.Changed() }
