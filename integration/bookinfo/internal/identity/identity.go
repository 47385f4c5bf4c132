// Package identity gives a Bookinfo service its X.509-SVID and trust bundle
// from the node agent, over either of the agent's delivery paths (the
// SPIFFE Workload API, as go-spiffe programs use it, or Envoy's SDS), and
// builds the mutual-TLS configurations that authorize peers by SPIFFE ID.
//
// The TLS configurations read the source on every handshake, so a rotated
// certificate or bundle is used from the next connection on without
// restarting anything.
package identity

import (
	"crypto/tls"
	"fmt"
	"net/http"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// Source is a live X.509-SVID and bundle source. Implementations are safe
// for concurrent use and always return their latest accepted values.
type Source interface {
	x509svid.Source
	x509bundle.Source
	// Close stops following updates.
	Close() error
}

// Service returns the SPIFFE ID of a Bookinfo service under Istio's scheme:
// spiffe://<td>/ns/default/sa/bookinfo-<service>.
func Service(td spiffeid.TrustDomain, service string) (spiffeid.ID, error) {
	return ServiceIn(td, "default", service)
}

// ServiceIn returns the SPIFFE ID of a Bookinfo service deployed in
// namespace: spiffe://<td>/ns/<namespace>/sa/bookinfo-<service>.
func ServiceIn(td spiffeid.TrustDomain, namespace, service string) (spiffeid.ID, error) {
	id, err := spiffeid.FromSegments(td, "ns", namespace, "sa", "bookinfo-"+service)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("identity: service %q in namespace %q: %w", service, namespace, err)
	}
	return id, nil
}

// ServerTLS returns a server configuration that presents src's SVID and
// accepts only clients whose SVID, verified against src's bundle, has one
// of the allowed IDs. Clients without a certificate are refused.
func ServerTLS(src Source, allowed ...spiffeid.ID) *tls.Config {
	cfg := tlsconfig.MTLSServerConfig(src, src, tlsconfig.AuthorizeOneOf(allowed...))
	cfg.MinVersion = tls.VersionTLS12
	return cfg
}

// ClientTLS returns a client configuration that presents src's SVID and
// accepts only a server whose SVID, verified against src's bundle, is
// server.
func ClientTLS(src Source, server spiffeid.ID) *tls.Config {
	cfg := tlsconfig.MTLSClientConfig(src, src, tlsconfig.AuthorizeID(server))
	cfg.MinVersion = tls.VersionTLS12
	return cfg
}

// HTTPClient returns an HTTPS client for calls to server. Keep-alives are
// off, so every request makes a fresh handshake: each call presents and
// sees the current certificates, which is what lets the product page show
// rotation as it happens (at the cost of one handshake per call).
func HTTPClient(src Source, server spiffeid.ID, timeout time.Duration) *http.Client {
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			TLSClientConfig:     ClientTLS(src, server),
			DisableKeepAlives:   true,
			TLSHandshakeTimeout: timeout,
		},
	}
}
