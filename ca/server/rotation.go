package server

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"time"

	"github.com/castellan-dev/castellan/ca/authority"
	"github.com/castellan-dev/castellan/ca/server/ownsvid"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
)

// followAuthority keeps what the server publishes in step with the CA's
// authorities (authority.Snapshot) until ctx ends. On every change it
//
//  1. publishes the trust bundle (every root of a prepared, active, old or
//     tainted authority) and the tainted authorities to GetBundle,
//     WatchBundle and every SyncAgent stream, so agents hold a new root
//     before any leaf under it is issued (the publish delay), and replace
//     every SVID under a tainted authority;
//  2. verifies client certificates against that bundle from the next TLS
//     handshake on (an agent renewed under a new root keeps its mTLS);
//  3. re-issues the server's own TLS certificate when another authority
//     signs (it is retried every ownsvid.Retry until it succeeds);
//  4. updates the CA expiry gauges.
func (s *Server) followAuthority(ctx context.Context) {
	var (
		last  uint64
		retry <-chan time.Time
	)
	for {
		changed := s.cfg.Authority.Changed()
		snap := s.cfg.Authority.Snapshot()
		if snap.Generation != last || retry != nil {
			last, retry = snap.Generation, nil
			if err := s.applySnapshot(ctx, snap); err != nil && ctx.Err() == nil {
				s.log.ErrorContext(ctx, "server certificate not re-issued under the new authority; retrying", "error", err.Error())
				retry = time.After(ownsvid.Retry)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-s.stopping:
			return
		case <-changed:
		case <-retry:
		}
	}
}

// applySnapshot publishes snap (see followAuthority). It fails only when
// the server's certificate could not be re-issued.
func (s *Server) applySnapshot(ctx context.Context, snap authority.Snapshot) error {
	b := x509bundle.FromX509Authorities(s.td, snap.Roots)
	tainted := make([][]byte, 0, len(snap.Tainted))
	for _, c := range snap.Tainted {
		tainted = append(tainted, c.Raw)
	}
	if s.bundle.Update(b, tainted) {
		s.log.InfoContext(ctx, "trust bundle published", "roots", len(snap.Roots), "sequence", s.bundle.Current().GetSequence())
	}
	s.trust.Set(snap.Roots)
	s.metrics.caExpiry.WithLabelValues("root").Set(float64(snap.Root.NotAfter.Unix()))
	s.metrics.caExpiry.WithLabelValues("intermediate").Set(float64(snap.Chain[0].NotAfter.Unix()))
	if cur := s.svid.Current(); cur != nil && signedBy(cur, snap.Chain[0]) {
		return nil
	}
	s.log.InfoContext(ctx, "signing authority changed; re-issuing the server certificate", "authority", snap.ActiveID)
	return s.svid.Renew(ctx)
}

// signedBy reports whether cert's chain carries intermediate as its issuer.
func signedBy(cert *tls.Certificate, intermediate *x509.Certificate) bool {
	return len(cert.Certificate) > 1 && bytes.Equal(cert.Certificate[1], intermediate.Raw)
}
