// Package caconn is how the node agent reaches the Castellan CA's
// endpoints (replicas): every address a DNS name resolves to, or an
// explicit list (endpoints.go). gRPC balances calls over the endpoints
// that are up (round_robin) and skips one whose health service says
// NOT_SERVING; a unary call that an endpoint fails with Unavailable is
// retried on another within a bounded time (retry.go); a stream that ends
// is reopened by its owner and lands on a live endpoint (SyncStream logs
// and counts the move). An endpoint whose TLS handshake fails is logged,
// counted and never used. What the TLS configuration checks (the CA's
// SPIFFE ID, the agent's SVID) is the caller's: agent/client.
package caconn

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"time"

	cav1 "github.com/castellan-dev/castellan/api/castellan/ca/v1"
	"github.com/castellan-dev/castellan/internal/clock"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	_ "google.golang.org/grpc/health" // client-side health checking (serviceConfig)
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/peer"
)

// Config configures a Dialer.
type Config struct {
	// Addresses of the CA (see --server-address): one host:port, whose
	// every DNS address is used; one dns:///host:port; or several
	// host:port.
	Addresses []string
	// FailoverTimeout bounds how long a unary call keeps trying other CA
	// endpoints after its first attempt failed with Unavailable (or
	// ResourceExhausted with a retry delay); 0 means
	// DefaultFailoverTimeout, and a negative value makes one attempt per
	// call. Retries wait on Clock.
	FailoverTimeout time.Duration
	// Registry receives castellan_agent_ca_failovers_total,
	// castellan_agent_ca_retries_total and
	// castellan_agent_ca_handshake_failures_total; nil registers none.
	Registry prometheus.Registerer
	// Clock times retries; nil means the wall clock.
	Clock clock.Clock
	// Logger receives the logs; nil discards them.
	Logger *slog.Logger
}

// reconnect bounds gRPC's own reconnection backoff (120s by default) so
// that a CA endpoint that comes back is used again within seconds.
var reconnect = grpc.ConnectParams{
	Backoff:           backoff.Config{BaseDelay: 250 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 5 * time.Second},
	MinConnectTimeout: 5 * time.Second,
}

// keepalive finds a CA endpoint that vanished without closing its
// connections (a node powered off, a partition) within half a minute, so
// that its streams move to another. The CA permits pings every 10s.
var keepalives = keepalive.ClientParameters{Time: 20 * time.Second, Timeout: 10 * time.Second, PermitWithoutStream: true}

// Dialer makes connections to the CA's endpoints. It is safe for
// concurrent use.
type Dialer struct {
	target          target
	failoverTimeout time.Duration
	clock           clock.Clock
	log             *slog.Logger
	metrics         *metrics
	syncPeer        streamEndpoint
}

// New validates cfg's addresses and registers the metrics. It does not
// contact the CA.
func New(cfg Config) (*Dialer, error) {
	t, err := parseTarget(cfg.Addresses)
	if err != nil {
		return nil, err
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.System{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.FailoverTimeout == 0 {
		cfg.FailoverTimeout = DefaultFailoverTimeout
	}
	m, err := newMetrics(cfg.Registry)
	if err != nil {
		return nil, err
	}
	return &Dialer{target: t, failoverTimeout: cfg.FailoverTimeout, clock: cfg.Clock, log: cfg.Logger, metrics: m}, nil
}

// Dial returns a connection to every CA endpoint, balanced round-robin,
// whose unary calls fail over (see failover). Each endpoint must pass
// tlsConf's checks whatever its address (the agent checks the CA's SPIFFE
// ID, not the host name, so IPs and names verify alike); an endpoint that
// fails its handshake is never used.
func (d *Dialer) Dial(tlsConf *tls.Config) (*grpc.ClientConn, error) {
	opts := append(d.target.dialOptions(),
		grpc.WithTransportCredentials(verifiedCreds{credentials.NewTLS(tlsConf), d}),
		grpc.WithConnectParams(reconnect),
		grpc.WithKeepaliveParams(keepalives),
	)
	if d.failoverTimeout > 0 {
		opts = append(opts, grpc.WithUnaryInterceptor(d.failover))
	}
	conn, err := grpc.NewClient(d.target.uri, opts...)
	if err != nil {
		return nil, fmt.Errorf("client: dial %s: %w", d.target.uri, err)
	}
	return conn, nil
}

// SyncStream wraps a SyncAgent stream so that it logs which CA endpoint
// serves it once the first state arrives, and counts a stream reopened on
// another endpoint than the last one as a failover.
func (d *Dialer) SyncStream(s grpc.ServerStreamingClient[cav1.SyncAgentResponse]) grpc.ServerStreamingClient[cav1.SyncAgentResponse] {
	return &syncStream{ServerStreamingClient: s, d: d}
}

// syncStream is a SyncAgent stream seen by SyncStream.
type syncStream struct {
	grpc.ServerStreamingClient[cav1.SyncAgentResponse]
	d       *Dialer
	started bool
}

// Recv implements grpc.ServerStreamingClient.
func (s *syncStream) Recv() (*cav1.SyncAgentResponse, error) {
	resp, err := s.ServerStreamingClient.Recv()
	if err != nil || s.started {
		return resp, err
	}
	s.started = true
	p, _ := peer.FromContext(s.Context())
	endpoint := endpointOf(p)
	if from, moved := s.d.syncPeer.moved(endpoint); moved {
		s.d.metrics.failovers.WithLabelValues("SyncAgent").Inc()
		s.d.log.Info("CA sync stream moved to another endpoint", "endpoint", endpoint, "previous", from)
	} else {
		s.d.log.Info("CA sync stream open", "endpoint", endpoint)
	}
	return resp, nil
}
