package trust

import (
	"crypto/tls"
	"crypto/x509"
	"sync/atomic"
)

// Clients is the pool client certificates are verified against: the
// trust bundle, replaced whole when it changes.
type Clients struct {
	base *tls.Config // the server's TLS configuration without ClientCAs
	cfg  atomic.Pointer[tls.Config]
}

// NewClients returns the client pool of a server whose TLS configuration
// is base (without ClientCAs), trusting roots.
func NewClients(base *tls.Config, roots []*x509.Certificate) *Clients {
	t := &Clients{base: base}
	t.Set(roots)
	return t
}

// Config returns the TLS configuration of the next handshake: base with
// the current pool.
func (t *Clients) Config() *tls.Config { return t.cfg.Load() }

// Set makes roots the pool of the next handshakes.
func (t *Clients) Set(roots []*x509.Certificate) {
	if t.base == nil {
		return
	}
	if cur := t.cfg.Load(); cur != nil && sameRoots(cur.ClientCAs, roots) {
		return
	}
	pool := x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	c := t.base.Clone()
	c.ClientCAs = pool
	t.cfg.Store(c)
}

// sameRoots reports whether pool holds exactly roots.
func sameRoots(pool *x509.CertPool, roots []*x509.Certificate) bool {
	if pool == nil {
		return false
	}
	want := x509.NewCertPool()
	for _, r := range roots {
		want.AddCert(r)
	}
	return pool.Equal(want)
}
