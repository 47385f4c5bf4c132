// Package sds serves Envoy's Secret Discovery Service
// (envoy.service.secret.v3.SecretDiscoveryService) from the agent's state:
// each caller, identified by its attested selectors, receives its own
// certificate and key and the trust bundle, and gets pushed new ones on every
// change.
//
// Resource names: "default" is the caller's identity (the first in snapshot
// order if several match); each of the caller's SPIFFE IDs names that
// identity; "ROOTCA", the trust domain name and "spiffe://<td>" name the
// trust bundle as a validation context.
//
// Protocol choices, following Envoy's xDS protocol documentation:
//   - A request with a type URL other than the SDS secret type is a
//     configuration error that no retry can fix, so the stream ends with
//     InvalidArgument.
//   - A requested name that does not exist (yet) is simply not returned, as
//     xDS specifies for non-LDS/CDS types: SotW responses carry only the
//     resources that exist and changed, and Envoy's initial_fetch_timeout
//     covers a secret that never arrives. The name is logged.
//   - A caller that matches no identity gets PermissionDenied when it opens
//     the stream; it is counted.
//   - version_info is the snapshot revision the response was built from;
//     every response has a nonce unique to this server. An ACK is not
//     answered. A NACK is logged and counted, and the NACKed content is not
//     sent again: the next change is.
package sds

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strconv"
	"sync/atomic"

	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"context"
	"github.com/castellan-dev/castellan/agent/attest"
	"github.com/castellan-dev/castellan/agent/state"
)

// Names and types served.
const (
	SecretTypeURL = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
	DefaultName   = "default"
	RootCAName    = "ROOTCA"
)

// Metrics are the collectors the server updates; nil fields are not updated.
type Metrics struct {
	Streams     prometheus.Gauge    // open SDS streams
	NACKs       prometheus.Counter  // NACKs received
	Unmatched   prometheus.Counter  // callers refused for matching no identity
	PushLatency prometheus.Observer // seconds from a state change to the push
}

// Config configures a Server. Store is required.
type Config struct {
	Store   *state.Store
	Logger  *slog.Logger
	Metrics Metrics
}

// Server implements the SecretDiscoveryService. Callers must be attested
// with attest.Credentials. Create it with New.
type Server struct {
	secretv3.UnimplementedSecretDiscoveryServiceServer
	store   *state.Store
	log     *slog.Logger
	metrics Metrics
	cache   renderCache

	noncePrefix string
	nonces      atomic.Uint64
}

// New returns a server reading cfg.Store.
func New(cfg Config) (*Server, error) {
	if cfg.Store == nil {
		return nil, fmt.Errorf("sds: Config.Store is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	var p [4]byte
	if _, err := rand.Read(p[:]); err != nil {
		return nil, fmt.Errorf("sds: nonce prefix: %w", err)
	}
	return &Server{store: cfg.Store, log: cfg.Logger, metrics: cfg.Metrics, noncePrefix: hex.EncodeToString(p[:])}, nil
}

func (s *Server) nonce() string {
	return s.noncePrefix + "-" + strconv.FormatUint(s.nonces.Add(1), 16)
}

// caller returns the attested selectors of the caller and the identities it
// may receive now, or the status error to end the call with.
func (s *Server) caller(ctx context.Context) ([]state.Selector, error) {
	sels, err := attest.FromContext(ctx)
	if err != nil {
		return nil, status.Errorf(codes.PermissionDenied, "sds: workload attestation failed: %v", err)
	}
	if len(s.store.Current().For(sels)) == 0 {
		inc(s.metrics.Unmatched)
		s.log.Warn("sds: caller matches no identity", "selectors", fmt.Sprint(sels))
		return nil, status.Errorf(codes.PermissionDenied,
			"sds: no identity is registered for this workload (attested selectors %v); create a registration entry for one of them%s", sels, attest.Explain(ctx))
	}
	return sels, nil
}

// stillAttested fails once the attested process has exited. A stream is
// attested when it opens but lives as long as its connection, which may
// have been handed to another process since: that process must not receive
// the next request's answer or the next rotated key.
func stillAttested(ctx context.Context) error {
	if _, err := attest.FromContext(ctx); err != nil {
		return status.Errorf(codes.PermissionDenied, "sds: workload attestation failed: %v", err)
	}
	return nil
}

func checkType(typeURL string) error {
	if typeURL != SecretTypeURL {
		return status.Errorf(codes.InvalidArgument, "sds: type_url %q is not served here; this server serves only %s", typeURL, SecretTypeURL)
	}
	return nil
}

func inc(c prometheus.Counter) {
	if c != nil {
		c.Inc()
	}
}

func addGauge(g prometheus.Gauge, d float64) {
	if g != nil {
		g.Add(d)
	}
}
