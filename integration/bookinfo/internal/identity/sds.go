package identity

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/castellan-dev/castellan/integration/envoysds"
)

// Istio's SDS resource names: the workload's own certificate and key, and
// the trust bundle it validates peers with.
const (
	SecretDefault = "default"
	SecretRootCA  = "ROOTCA"
)

// SDS is a Source fed over Envoy's Secret Discovery Service, subscribed as
// an Envoy sidecar is: to "default" and "ROOTCA", ACKing every response it
// can use and NACKing any it cannot parse. Every accepted push replaces
// the SVID and bundle that the next handshake uses.
type SDS struct {
	td     spiffeid.TrustDomain
	cancel context.CancelFunc
	done   chan struct{}
	ready  chan struct{}

	mu     sync.RWMutex
	svid   *x509svid.SVID
	bundle *x509bundle.Bundle
	pushes int
}

// NewSDS subscribes to the SDS server on the Unix socket at path as node
// and returns once both secrets have arrived (or ctx is done). The bundle
// in ROOTCA is taken to be that of trust domain td.
func NewSDS(ctx context.Context, path string, node *corev3.Node, td spiffeid.TrustDomain, log *slog.Logger) (*SDS, error) {
	conn, err := envoysds.Dial(path)
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	s := &SDS{td: td, done: make(chan struct{}), ready: make(chan struct{})}
	client, err := envoysds.New(conn, envoysds.Config{
		Node:          node,
		ResourceNames: []string{SecretDefault, SecretRootCA},
		Validate:      s.validate,
		Logger:        log,
	})
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("identity: %w", err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	go func() {
		defer close(s.done)
		defer conn.Close()
		go func() { _ = client.Run(runCtx) }()
		s.follow(runCtx, client.Updates(), log)
	}()
	select {
	case <-s.ready:
		return s, nil
	case <-ctx.Done():
		_ = s.Close()
		return nil, fmt.Errorf("identity: no default and ROOTCA secrets from SDS at %s: %w", path, ctx.Err())
	}
}

// follow applies every accepted update until ctx is done.
func (s *SDS) follow(ctx context.Context, updates <-chan envoysds.Update, log *slog.Logger) {
	for {
		select {
		case <-ctx.Done():
			return
		case u := <-updates:
			if err := s.apply(u.Secrets); err != nil {
				log.Warn("sds update not applied", "version", u.Version, "error", err)
				continue
			}
			log.Info("sds secrets applied", "version", u.Version)
		}
	}
}

// validate parses every secret of a response; an error makes the client
// NACK it.
func (s *SDS) validate(secrets map[string]*tlsv3.Secret) error {
	if d, ok := secrets[SecretDefault]; ok {
		if _, err := parseSVID(d); err != nil {
			return err
		}
	}
	if r, ok := secrets[SecretRootCA]; ok {
		if _, err := s.parseBundle(r); err != nil {
			return err
		}
	}
	return nil
}

// apply stores the SVID and bundle of an update once it holds both.
func (s *SDS) apply(secrets map[string]*tlsv3.Secret) error {
	d, r := secrets[SecretDefault], secrets[SecretRootCA]
	if d == nil || r == nil {
		return nil // wait for the other secret
	}
	svid, err := parseSVID(d)
	if err != nil {
		return err
	}
	bundle, err := s.parseBundle(r)
	if err != nil {
		return err
	}
	s.mu.Lock()
	first := s.svid == nil
	s.svid, s.bundle = svid, bundle
	s.pushes++
	s.mu.Unlock()
	if first {
		close(s.ready)
	}
	return nil
}

func parseSVID(sec *tlsv3.Secret) (*x509svid.SVID, error) {
	tc := sec.GetTlsCertificate()
	if tc == nil {
		return nil, fmt.Errorf("identity: secret %q has no tls_certificate", sec.GetName())
	}
	svid, err := x509svid.Parse(tc.GetCertificateChain().GetInlineBytes(), tc.GetPrivateKey().GetInlineBytes())
	if err != nil {
		return nil, fmt.Errorf("identity: secret %q: %w", sec.GetName(), err)
	}
	return svid, nil
}

func (s *SDS) parseBundle(sec *tlsv3.Secret) (*x509bundle.Bundle, error) {
	vc := sec.GetValidationContext()
	if vc == nil {
		return nil, fmt.Errorf("identity: secret %q has no validation_context", sec.GetName())
	}
	b, err := x509bundle.Parse(s.td, vc.GetTrustedCa().GetInlineBytes())
	if err != nil {
		return nil, fmt.Errorf("identity: secret %q: %w", sec.GetName(), err)
	}
	if b.Empty() {
		return nil, fmt.Errorf("identity: secret %q holds no CA certificate", sec.GetName())
	}
	return b, nil
}

// GetX509SVID returns the latest SVID received in "default".
func (s *SDS) GetX509SVID() (*x509svid.SVID, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.svid == nil {
		return nil, errors.New("identity: no SVID received over SDS yet")
	}
	return s.svid, nil
}

// GetX509BundleForTrustDomain returns the latest bundle received in
// "ROOTCA" if td is the source's trust domain.
func (s *SDS) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if td != s.td {
		return nil, fmt.Errorf("identity: no bundle for trust domain %q (SDS serves %q)", td, s.td)
	}
	if s.bundle == nil {
		return nil, errors.New("identity: no bundle received over SDS yet")
	}
	return s.bundle, nil
}

// Pushes reports how many complete updates have been applied.
func (s *SDS) Pushes() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.pushes
}

// Close ends the subscription and waits for it to stop.
func (s *SDS) Close() error {
	s.cancel()
	<-s.done
	return nil
}
