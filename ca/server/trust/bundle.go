// Package trust holds what the CA server trusts and publishes: the trust
// bundle and the tainted authorities sent to agents (GetBundle,
// WatchBundle, SyncAgent) with a channel closed at every change, and the
// pool client certificates are verified against. Both follow the CA's
// authorities (server.Server.Run).
package trust

import (
	"bytes"
	"crypto/x509"
	"slices"
	"sync"

	cav1 "github.com/castellan-dev/castellan/api/castellan/ca/v1"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
)

// Bundle is the published trust bundle, the tainted authorities
// (DER signing certificates) and a channel closed when either changes.
type Bundle struct {
	mu      sync.Mutex
	pb      *cav1.Bundle
	tainted [][]byte
	changed chan struct{}
}

// NewBundle returns the published bundle b, sequence number 1.
func NewBundle(b *x509bundle.Bundle) *Bundle {
	st := &Bundle{changed: make(chan struct{})}
	st.pb = bundleProto(b, 1)
	return st
}

// bundleProto is b in its API form, with sequence number seq.
func bundleProto(b *x509bundle.Bundle, seq uint64) *cav1.Bundle {
	pb := &cav1.Bundle{TrustDomain: b.TrustDomain().Name(), Sequence: seq}
	for _, c := range b.X509Authorities() {
		pb.X509Authorities = append(pb.X509Authorities, c.Raw)
	}
	return pb
}

// Current returns the bundle; callers must not modify it.
func (b *Bundle) Current() *cav1.Bundle {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.pb
}

// Watch returns the bundle and a channel closed at its next change (or
// the tainted authorities').
func (b *Bundle) Watch() (*cav1.Bundle, <-chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.pb, b.changed
}

// WatchAll is Watch with the tainted authorities.
func (b *Bundle) WatchAll() (*cav1.Bundle, [][]byte, <-chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.pb, b.tainted, b.changed
}

// Set publishes a new bundle (CA rotation) with the next sequence number.
func (b *Bundle) Set(nb *x509bundle.Bundle) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.pb = bundleProto(nb, b.pb.Sequence+1)
	close(b.changed)
	b.changed = make(chan struct{})
}

// Update publishes nb and the tainted authorities (DER). A new bundle gets
// the next sequence number; a change of the tainted authorities alone
// wakes the SyncAgent streams without a new bundle. It reports whether
// the bundle changed.
func (b *Bundle) Update(nb *x509bundle.Bundle, tainted [][]byte) bool {
	pb := bundleProto(nb, 0)
	b.mu.Lock()
	defer b.mu.Unlock()
	rootsChanged := !slices.EqualFunc(pb.X509Authorities, b.pb.X509Authorities, bytes.Equal)
	taintChanged := !slices.EqualFunc(tainted, b.tainted, bytes.Equal)
	if !rootsChanged && !taintChanged {
		return false
	}
	if rootsChanged {
		pb.Sequence = b.pb.Sequence + 1
		b.pb = pb
	}
	b.tainted = tainted
	close(b.changed)
	b.changed = make(chan struct{})
	return rootsChanged
}

// UnderTaint reports whether leaf was signed by a tainted authority: its
// holder must replace it now (an agent SVID under one may be renewed
// before its half-life).
func (b *Bundle) UnderTaint(leaf *x509.Certificate) bool {
	_, tainted, _ := b.WatchAll()
	for _, der := range tainted {
		c, err := x509.ParseCertificate(der)
		if err == nil && bytes.Equal(leaf.RawIssuer, c.RawSubject) && leaf.CheckSignatureFrom(c) == nil {
			return true
		}
	}
	return false
}
