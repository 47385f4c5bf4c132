// Package ownsvid is the CA server's own TLS identity,
// spiffe://<td>/castellan/server: signed by the CA's intermediate,
// recorded in the ledger like every issuance, and renewed at half its
// lifetime.
package ownsvid

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/castellan-dev/castellan/internal/clock"

	"github.com/castellan-dev/castellan/ca/authn"
	"github.com/castellan-dev/castellan/ca/authority"
	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/ca/ledger/reserve"
	"github.com/castellan-dev/castellan/ca/server/issuance"
	"github.com/castellan-dev/castellan/internal/serial"
)

// Retry is how long Run waits after a failed renewal.
const Retry = 10 * time.Second

// Config configures an SVID; every field is required.
type Config struct {
	Authority *authority.Authority
	// Ledger records every SVID before it is used.
	Ledger issuance.Ledger
	// TTL is the SVID's lifetime (the agent TTL; it is renewed at half of
	// it).
	TTL time.Duration
	// Names are the DNS and IP SANs next to the SPIFFE ID.
	Names  authority.ServerNames
	Clock  clock.Clock
	Logger *slog.Logger
}

// SVID is the CA server's own TLS identity,
// spiffe://<td>/castellan/server, signed by the intermediate with
// Authority.SignServer (the only issuance that may add DNS and IP SANs,
// server.Config.ServerNames) and recorded in the ledger.
type SVID struct {
	cfg  Config
	cert atomic.Pointer[tls.Certificate]
}

// New returns the SVID of cfg, with no certificate until Renew.
func New(cfg Config) *SVID { return &SVID{cfg: cfg} }

// Current returns the certificate (nil before the first Renew).
func (v *SVID) Current() *tls.Certificate { return v.cert.Load() }

// Renew issues a new server SVID and makes it current.
func (v *SVID) Renew(ctx context.Context) error {
	a := v.cfg.Authority
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("server: generate server key: %w", err)
	}
	id := authn.ServerID(a.TrustDomain())
	iss, err := a.SignServer(ctx, key.Public(), id, v.cfg.TTL, v.cfg.Names)
	if err != nil {
		return fmt.Errorf("server: sign server SVID: %w", err)
	}
	if _, err := v.cfg.Ledger.Append(reserve.Use(ctx), issuance.Event(entry.KindIssuance, iss, "", "castellan server SVID")); err != nil {
		return fmt.Errorf("server: record server SVID: %w", err)
	}
	chain := make([][]byte, 0, len(iss.Chain))
	for _, c := range iss.Chain {
		chain = append(chain, c.Raw)
	}
	v.cert.Store(&tls.Certificate{Certificate: chain, PrivateKey: key, Leaf: iss.Chain[0]})
	v.cfg.Logger.InfoContext(ctx, "server SVID issued", "spiffe_id", id.String(),
		"serial", serial.FromBig(iss.Serial).String(), "not_after", iss.NotAfter)
	return nil
}

// Run renews the SVID at half its lifetime until ctx ends.
func (v *SVID) Run(ctx context.Context) error {
	for {
		leaf := v.Current().Leaf
		wait := leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) / 2).Sub(v.cfg.Clock.Now())
		t := time.NewTimer(max(wait, 0))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		if err := v.Renew(ctx); err != nil {
			v.cfg.Logger.ErrorContext(ctx, "server SVID renewal failed; retrying", "error", err.Error())
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(Retry):
			}
		}
	}
}
