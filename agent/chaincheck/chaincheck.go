// Package chaincheck checks the X509-SVIDs the CA returns as go-spiffe
// would, at a fraction of the cost: Parse turns a chain and the agent's key
// into an SVID with x509svid.ParseRaw's checks, and a Checker verifies it
// against the agent's trust bundle with x509svid.Verify's verdict.
//
// x509svid.Verify checks two signatures per SVID: the leaf's by the
// intermediate, and the intermediate's by a root of the bundle. The second
// is the same for every SVID the intermediate signs. A Checker remembers
// which intermediates (by DER) a root of the current bundle signed, and for
// a chain of exactly a leaf and a remembered intermediate it checks
// everything else x509svid.Verify and crypto/x509 would: the leaf's SPIFFE
// ID and trust domain, that the leaf is not a CA and may not sign
// certificates or CRLs, the leaf's signature by the intermediate, the
// validity windows of leaf, intermediate and root at the given time, and
// the intermediate's and root's constraints (CA flag, key usage, path
// length, subject/issuer names, unhandled critical extensions).
//
// It takes that shortcut only where it is provably equivalent: no
// certificate of the chain carries name constraints or policy constraints,
// mappings or inhibitions (whose checks need the whole chain), the chain is
// exactly leaf and intermediate, the bundle has at most MaxRoots roots (so
// crypto/x509's bound on signature checks cannot be what decides), and no
// two certificates of the path share a subject and key (crypto/x509 would
// skip such a parent). Otherwise, and whenever the shortcut does not
// accept, it calls x509svid.Verify: every refusal, and its message, is
// x509svid.Verify's own. Extended key usages are not checked because
// x509svid.Verify asks crypto/x509 for any usage, which skips that check.
package chaincheck

import (
	"bytes"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// MaxRoots is the largest bundle the shortcut is taken for. crypto/x509
// gives up after 100 signature checks per chain; with at most 2*MaxRoots+2
// candidate parents it always reaches the chain the shortcut found.
const MaxRoots = 32

// MaxRemembered bounds the intermediates a Checker remembers; when full, it
// forgets them all (a CA has one or two active intermediates).
const MaxRemembered = 16

var (
	oidNameConstraints   = asn1.ObjectIdentifier{2, 5, 29, 30}
	oidPolicyMappings    = asn1.ObjectIdentifier{2, 5, 29, 33}
	oidPolicyConstraints = asn1.ObjectIdentifier{2, 5, 29, 36}
	oidInhibitAnyPolicy  = asn1.ObjectIdentifier{2, 5, 29, 54}
)

// Checker verifies X509-SVID chains, remembering the intermediates it found
// signed by a root of the bundle it was last given. Its zero value is ready
// to use; it is safe for concurrent use.
type Checker struct {
	mu sync.Mutex
	// roots is the root set verified's entries were checked against.
	roots []*x509.Certificate
	// verified maps an intermediate's DER to the root of roots that
	// signed it, for intermediates whose own checks (and the root's) hold
	// apart from time.
	verified map[string]*x509.Certificate
	// fast and full count the chains accepted by the shortcut and those
	// handed to x509svid.Verify.
	fast, full atomic.Int64
}

// Verify returns nil if bundle accepts certs (leaf first) at now, and
// otherwise x509svid.Verify's error: it is x509svid.Verify(certs, bundle,
// x509svid.WithTime(now)) without the returned chains.
func (c *Checker) Verify(certs []*x509.Certificate, bundle *x509bundle.Bundle, now time.Time) error {
	if bundle == nil {
		return errors.New("chaincheck: no trust bundle to verify the chain against")
	}
	if c.shortcut(certs, bundle, now) {
		c.fast.Add(1)
		return nil
	}
	c.full.Add(1)
	_, _, err := x509svid.Verify(certs, bundle, x509svid.WithTime(now))
	return err
}

// shortcut reports whether certs is a leaf and a remembered (or now
// verified) intermediate that the full verification would accept at now.
// false means only that the full verification must decide.
func (c *Checker) shortcut(certs []*x509.Certificate, bundle *x509bundle.Bundle, now time.Time) bool {
	if len(certs) != 2 || now.IsZero() {
		return false
	}
	leaf, inter := certs[0], certs[1]
	if leaf == nil || inter == nil || !leafAcceptable(leaf, bundle, now) {
		return false
	}
	root := c.rootOf(inter, bundle.X509Authorities())
	if root == nil || !within(inter, now) || !within(root, now) {
		return false
	}
	if !bytes.Equal(leaf.RawIssuer, inter.RawSubject) || sameSubjectAndKey(leaf, inter) || sameSubjectAndKey(leaf, root) {
		return false
	}
	return leaf.CheckSignatureFrom(inter) == nil
}

// leafAcceptable checks everything of the leaf alone that x509svid.Verify
// and crypto/x509 check, and that it carries nothing the shortcut does not
// handle.
func leafAcceptable(leaf *x509.Certificate, bundle *x509bundle.Bundle, now time.Time) bool {
	id, err := x509svid.IDFromCert(leaf)
	switch {
	case err != nil, id.TrustDomain() != bundle.TrustDomain(), len(leaf.Raw) == 0:
		return false
	case leaf.IsCA, leaf.KeyUsage&(x509.KeyUsageCertSign|x509.KeyUsageCRLSign) != 0:
		return false
	}
	return within(leaf, now) && plain(leaf)
}

// rootOf returns the root of roots that signed inter, remembering it, if
// inter and that root pass every check of crypto/x509 that does not depend
// on the time or the leaf; nil otherwise. A root set other than the
// remembered one makes it forget every intermediate first. The first
// verification of an intermediate holds the lock: concurrent callers wait
// for it rather than repeat it.
func (c *Checker) rootOf(inter *x509.Certificate, roots []*x509.Certificate) *x509.Certificate {
	if len(roots) > MaxRoots || len(inter.Raw) == 0 || slices.Contains(roots, nil) {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !sameRoots(c.roots, roots) {
		c.roots, c.verified = roots, nil
	}
	if r, ok := c.verified[string(inter.Raw)]; ok {
		return r
	}
	if !intermediateAcceptable(inter) {
		return nil
	}
	for _, r := range roots {
		if rootAcceptable(r, inter) && inter.CheckSignatureFrom(r) == nil {
			if c.verified == nil || len(c.verified) >= MaxRemembered {
				c.verified = make(map[string]*x509.Certificate, MaxRemembered)
			}
			c.verified[string(inter.Raw)] = r
			return r
		}
	}
	return nil
}

// intermediateAcceptable checks what crypto/x509 requires of an
// intermediate apart from its validity window and its parent: a CA
// certificate with basic constraints, nothing the shortcut does not
// handle. Its path length may be anything: it has no intermediate below
// it.
func intermediateAcceptable(inter *x509.Certificate) bool {
	return inter.BasicConstraintsValid && inter.IsCA && inter.PublicKey != nil && plain(inter)
}

// rootAcceptable checks what crypto/x509 requires of a root above inter
// apart from its validity window and its signature: inter's issuer, room
// for one intermediate below it, nothing the shortcut does not handle, and
// not a copy of inter (crypto/x509 skips a parent already in the chain).
func rootAcceptable(root, inter *x509.Certificate) bool {
	switch {
	case len(root.Raw) == 0 || !bytes.Equal(root.RawSubject, inter.RawIssuer):
		return false
	case root.BasicConstraintsValid && root.MaxPathLen >= 0 && root.MaxPathLen < 1:
		return false
	}
	return !sameSubjectAndKey(root, inter) && plain(root)
}

// plain reports whether c has no unhandled critical extension and none of
// the extensions whose checks span the whole chain (name constraints,
// policy mappings, policy constraints, inhibit any policy).
func plain(c *x509.Certificate) bool {
	if len(c.UnhandledCriticalExtensions) > 0 || len(c.PolicyMappings) > 0 {
		return false
	}
	if c.RequireExplicitPolicy != 0 || c.RequireExplicitPolicyZero || c.InhibitPolicyMapping != 0 ||
		c.InhibitPolicyMappingZero || c.InhibitAnyPolicy != 0 || c.InhibitAnyPolicyZero {
		return false
	}
	for _, e := range c.Extensions {
		if e.Id.Equal(oidNameConstraints) || e.Id.Equal(oidPolicyMappings) ||
			e.Id.Equal(oidPolicyConstraints) || e.Id.Equal(oidInhibitAnyPolicy) {
			return false
		}
	}
	return true
}

// within reports whether now is in c's validity window, bounds included,
// as crypto/x509 checks it.
func within(c *x509.Certificate, now time.Time) bool {
	return !now.Before(c.NotBefore) && !now.After(c.NotAfter)
}

// sameSubjectAndKey reports whether a and b have the same subject and
// public key; crypto/x509 never puts such a parent above its child in a
// chain (whatever their alternative names), so the shortcut leaves these
// to it.
func sameSubjectAndKey(a, b *x509.Certificate) bool {
	return bytes.Equal(a.RawSubject, b.RawSubject) && bytes.Equal(a.RawSubjectPublicKeyInfo, b.RawSubjectPublicKeyInfo)
}

// sameRoots reports whether a and b are the same certificates in the same
// order.
func sameRoots(a, b []*x509.Certificate) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] && !bytes.Equal(a[i].Raw, b[i].Raw) {
			return false
		}
	}
	return true
}
