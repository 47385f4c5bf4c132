package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/castellan-dev/castellan/ca/authn"
	"github.com/castellan-dev/castellan/ca/authority"
	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/ca/ledger/reserve"
	"github.com/castellan-dev/castellan/internal/serial"
)

// serverSVIDRetry is how long run waits after a failed renewal.
const serverSVIDRetry = 10 * time.Second

// serverSVID is the CA server's own TLS identity,
// spiffe://<td>/castellan/server, signed by the intermediate with
// Authority.SignServer (the only issuance that may add DNS and IP SANs,
// Config.ServerNames) and recorded in the ledger.
type serverSVID struct {
	s     *Server
	names authority.ServerNames // DNS and IP SANs next to the SPIFFE ID
	cert  atomic.Pointer[tls.Certificate]
}

func (v *serverSVID) current() *tls.Certificate { return v.cert.Load() }

// ttl is the lifetime of the server's SVID: the agent TTL (it is renewed at
// half of it).
func (v *serverSVID) ttl() time.Duration { return v.s.cfg.AgentTTL }

// renew issues a new server SVID and makes it current.
func (v *serverSVID) renew(ctx context.Context) error {
	a := v.s.cfg.Authority
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("server: generate server key: %w", err)
	}
	id := authn.ServerID(a.TrustDomain())
	iss, err := a.SignServer(ctx, key.Public(), id, v.ttl(), v.names)
	if err != nil {
		return fmt.Errorf("server: sign server SVID: %w", err)
	}
	if _, err := v.s.cfg.Ledger.Append(reserve.Use(ctx), issuanceEvent(entry.KindIssuance, iss, "", "castellan server SVID")); err != nil {
		return fmt.Errorf("server: record server SVID: %w", err)
	}
	chain := make([][]byte, 0, len(iss.Chain))
	for _, c := range iss.Chain {
		chain = append(chain, c.Raw)
	}
	v.cert.Store(&tls.Certificate{Certificate: chain, PrivateKey: key, Leaf: iss.Chain[0]})
	v.s.log.InfoContext(ctx, "server SVID issued", "spiffe_id", id.String(),
		"serial", serial.FromBig(iss.Serial).String(), "not_after", iss.NotAfter)
	return nil
}

// run renews the SVID at half its lifetime until ctx ends.
func (v *serverSVID) run(ctx context.Context) error {
	for {
		leaf := v.current().Leaf
		wait := leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) / 2).Sub(v.s.clock())
		t := time.NewTimer(max(wait, 0))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		if err := v.renew(ctx); err != nil {
			v.s.log.ErrorContext(ctx, "server SVID renewal failed; retrying", "error", err.Error())
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(serverSVIDRetry):
			}
		}
	}
}
