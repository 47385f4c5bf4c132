// Package server is the Castellan CA's gRPC front end: the
// castellan.ca.v1.CertificateAuthorityService that node agents call (over
// TLS with the server's own SVID, mutual TLS after attestation) and the
// castellan.admin.v1.AdminService for operators (on an owner-only Unix
// socket, or over mutual TLS for configured admin identities).
//
// Every call first passes a gate that refuses revoked client certificates
// and agent certificates of banned nodes (package cutoff), then the admin
// gate (package admin), then the edge (package edge), which turns errors
// into statuses and counts castellan_csr_total. Every request goes
// authn -> authz -> sign -> ledger -> response (package issuance): a
// refused request is counted with its reason and never reaches the
// ledger; a signed certificate is durable in the ledger before the caller
// sees it.
//
// This package wires those parts together and holds the CA service's
// handlers, the agent renewal rule, and the server's following of the
// CA's authorities (rotation.go). Its subpackages own the rest: admission
// (the CSR admission bound), admin and adminsock (the admin API and its
// socket), cutoff, edge, issuance, logproof (proofs of the witnessed log),
// ownsvid (the server's own certificate), readiness (store health) and
// trust (the published bundle and the client trust pool).
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/castellan-dev/castellan/internal/clock"

	cav1 "github.com/castellan-dev/castellan/api/castellan/ca/v1"
	"github.com/castellan-dev/castellan/ca/authn"
	"github.com/castellan-dev/castellan/ca/authority"
	"github.com/castellan-dev/castellan/ca/authz"
	"github.com/castellan-dev/castellan/ca/server/admin"
	"github.com/castellan-dev/castellan/ca/server/admission"
	"github.com/castellan-dev/castellan/ca/server/cutoff"
	"github.com/castellan-dev/castellan/ca/server/edge"
	"github.com/castellan-dev/castellan/ca/server/issuance"
	"github.com/castellan-dev/castellan/ca/server/logproof"
	"github.com/castellan-dev/castellan/ca/server/ownsvid"
	"github.com/castellan-dev/castellan/ca/server/trust"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
)

// Defaults applied by New to zero Config fields.
const (
	DefaultAgentTTL        = time.Hour
	DefaultMaxRequestBytes = 4 << 20
	DefaultMaxBatch        = 1000
)

// Ledger is what the server needs of the issuance ledger (*ledger.Ledger).
type Ledger interface {
	// Ledger appends the issuances (and attestations) durably.
	issuance.Ledger
	// RevokedSerials returns the lower-case hex serials of revoked
	// certificates that have not expired at now.
	RevokedSerials(now time.Time) []string
	// RevocationsChanged returns a channel closed at the next revocation.
	RevocationsChanged() <-chan struct{}
	// Children returns the serials renewed from serial (at most max).
	Children(ctx context.Context, serial string, max int) ([]string, error)
	// BansChanged returns a channel closed at the next ban or unban.
	BansChanged() <-chan struct{}
	// Ledger records node agents, bans and revocations for the cut-off.
	cutoff.Ledger
	// Ledger lists node agents and bans them for the admin API.
	admin.Ledger
	// Prover proves the witnessed log to agents (GetLogProof).
	logproof.Prover
}

// Config configures a Server. Authority, Ledger, Attestor, Tokens and
// Entries are required.
type Config struct {
	Authority *authority.Authority
	Ledger    Ledger
	// Attestor proves the node of an AttestAgent caller.
	Attestor authn.NodeAttestor
	// Tokens serves the admin API's CreateJoinToken.
	Tokens *authn.JoinTokens
	// Entries are the registration entries (admin API and SyncAgent).
	Entries *authz.Entries
	// Authorizer decides which SVIDs a node may obtain
	// (nil: &authz.NodeAuthorizer{Entries: Entries}).
	Authorizer authz.Authorizer
	// AgentTTL is the lifetime of agent SVIDs (0: DefaultAgentTTL).
	AgentTTL time.Duration
	// AdminIDs may call the admin API over mutual TLS.
	AdminIDs []spiffeid.ID
	// ServerNames are DNS names and IP addresses put in the server's own
	// certificate next to its SPIFFE ID, for clients that verify the
	// server by host name (Istio's CA clients). Validated by New with
	// authority.ParseServerNames. Empty: the certificate has only its URI SAN.
	ServerNames []string
	// MaxRequestBytes bounds one gRPC request (0: DefaultMaxRequestBytes).
	MaxRequestBytes int
	// MaxBatch bounds the requests in one BatchSignX509SVID (0: DefaultMaxBatch).
	MaxBatch int
	// Registry receives the server's metrics (nil: not exported).
	Registry *prometheus.Registry
	// Logger receives request logs (nil: discard).
	Logger *slog.Logger
	// Clock returns the current time (nil: time.Now).
	Clock clock.Clock
	// Quota, when set, limits workload issuance per node and per identity
	// (a *quota.Limiter); a refusal is its error (ResourceExhausted).
	Quota issuance.Quota
	// MaxCSRsInFlight bounds the workload CSRs worked on at once, over all
	// callers (package admission; 0: admission.DefaultCapacity, negative: unbounded).
	MaxCSRsInFlight int
	// AdmissionWait is how long a call may wait for room under
	// MaxCSRsInFlight before it is refused with ResourceExhausted and a
	// RetryInfo delay (0: admission.DefaultWait).
	AdmissionWait time.Duration
}

// Server holds the CA's gRPC services. Create it with New, serve it with
// GRPCServer and AdminGRPCServer, and keep its own SVID fresh with Run.
type Server struct {
	cfg     Config
	td      spiffeid.TrustDomain
	log     *slog.Logger
	clock   clock.Clock
	metrics *metrics
	health  *health.Server
	bundle  *trust.Bundle
	trust   *trust.Clients // the pool client certificates are verified against
	svid    *ownsvid.SVID
	gate    *admin.Gate
	cutoff  *cutoff.Guard
	issuer  *issuance.Pipeline
	admit   *admission.Control
	edge    *edge.Edge

	mu       sync.Mutex
	servers  []*grpc.Server
	public   []publicService // added by ServePublic
	stopping chan struct{}   // closed by Shutdown: long-lived streams end
	stopOnce sync.Once
}

// New checks cfg, issues the server's own SVID
// (spiffe://<td>/castellan/server) and returns the server.
func New(ctx context.Context, cfg Config) (*Server, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	names, err := authority.ParseServerNames(cfg.ServerNames)
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	s, err := newServer(cfg)
	if err != nil {
		return nil, err
	}
	s.svid = ownsvid.New(ownsvid.Config{Authority: cfg.Authority, Ledger: cfg.Ledger, TTL: cfg.AgentTTL,
		Names: names, Clock: cfg.Clock, Logger: cfg.Logger})
	if err := s.svid.Renew(ctx); err != nil {
		return nil, err
	}
	if err := s.cutoff.Reconcile(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// withDefaults checks cfg's required fields and agent TTL, and returns
// cfg with its zero fields set to their defaults.
func (cfg Config) withDefaults() (Config, error) {
	if cfg.Authority == nil || cfg.Ledger == nil || cfg.Attestor == nil || cfg.Tokens == nil || cfg.Entries == nil {
		return cfg, errors.New("server: Authority, Ledger, Attestor, Tokens and Entries are required")
	}
	if cfg.Authorizer == nil {
		cfg.Authorizer = &authz.NodeAuthorizer{Entries: cfg.Entries}
	}
	if cfg.AgentTTL == 0 {
		cfg.AgentTTL = DefaultAgentTTL
	}
	if _, err := cfg.Authority.Lifetime().For(cfg.AgentTTL, 0, ""); err != nil {
		return cfg, fmt.Errorf("server: agent TTL: %w", err)
	}
	if cfg.MaxRequestBytes == 0 {
		cfg.MaxRequestBytes = DefaultMaxRequestBytes
	}
	if cfg.MaxBatch == 0 {
		cfg.MaxBatch = DefaultMaxBatch
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	cfg.Clock = clock.OrSystem(cfg.Clock)
	if cfg.MaxCSRsInFlight == 0 {
		cfg.MaxCSRsInFlight = admission.DefaultCapacity()
	}
	if cfg.AdmissionWait <= 0 {
		cfg.AdmissionWait = admission.DefaultWait
	}
	return cfg, nil
}

// newServer builds the server's parts from cfg (with its defaults) and
// registers their metrics.
func newServer(cfg Config) (*Server, error) {
	s := &Server{cfg: cfg, td: cfg.Authority.TrustDomain(), log: cfg.Logger, clock: cfg.Clock,
		health: health.NewServer(), bundle: trust.NewBundle(cfg.Authority.Bundle()),
		stopping: make(chan struct{}),
		admit:    admission.New(cfg.MaxCSRsInFlight, cfg.AdmissionWait),
	}
	s.cutoff = cutoff.New(cutoff.Config{Ledger: cfg.Ledger, TrustDomain: s.td, Clock: cfg.Clock, Logger: cfg.Logger})
	s.edge = edge.New(cfg.Logger, s.isPublicService)
	s.gate = admin.NewGate(cfg.AdminIDs, s.isPublicService, cfg.Logger)
	m, err := newMetrics(cfg.Registry, append(s.edge.Collectors(), s.admit.Collectors()...)...)
	if err != nil {
		return nil, fmt.Errorf("server: register metrics: %w", err)
	}
	s.metrics = m
	s.issuer = issuance.New(issuance.Config{Authority: cfg.Authority, Authorizer: cfg.Authorizer, Quota: cfg.Quota,
		Ledger: cfg.Ledger, Admission: s.admit, Cutoff: s.cutoff, Signing: m.signing, Logger: cfg.Logger})
	s.trust = trust.NewClients(s.baseTLSConfig(), cfg.Authority.Snapshot().Roots)
	m.caExpiry.WithLabelValues("root").Set(float64(cfg.Authority.Root().NotAfter.Unix()))
	m.caExpiry.WithLabelValues("intermediate").Set(float64(cfg.Authority.Intermediate().NotAfter.Unix()))
	return s, nil
}

// Run renews the server's own SVID at half its lifetime, and follows the
// CA's authorities (rotation.go: bundle, tainted authorities, client
// trust, the server's certificate), until ctx ends. It returns nil when
// ctx is cancelled.
func (s *Server) Run(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.followAuthority(ctx)
	}()
	defer func() { <-done }()
	return s.svid.Run(ctx)
}

// Health returns the gRPC health service. A readiness.Monitor sets its
// overall status; a caller that does not run one sets the status itself.
func (s *Server) Health() *health.Server { return s.health }

// TLSConfig returns the server TLS configuration: the server's SVID, TLS
// 1.3, and client certificates optional but verified against the trust
// bundle when given (the bundle of the handshake's time: it follows CA
// rotations, see Run).
func (s *Server) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) { return s.trust.Config(), nil },
	}
}

// baseTLSConfig is TLSConfig without the client pool (trust.Clients adds it).
func (s *Server) baseTLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS13,
		ClientAuth:     tls.VerifyClientCertIfGiven,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return s.svid.Current(), nil },
		NextProtos:     []string{"h2"},
	}
}

// Registrar adds a service to a gRPC server, e.g. an audit service added
// next to the admin service.
type Registrar func(grpc.ServiceRegistrar)

// GRPCServer returns the main gRPC server, for TCP: TLS with the server's
// SVID, the CA service, the health service, the services added with
// ServePublic, and the admin service plus any extra admin services, the
// latter allowed only to callers whose verified SPIFFE ID is one of
// Config.AdminIDs.
func (s *Server) GRPCServer(extraAdmin ...Registrar) *grpc.Server {
	g := grpc.NewServer(
		grpc.Creds(credentials.NewTLS(s.TLSConfig())),
		grpc.MaxRecvMsgSize(s.cfg.MaxRequestBytes),
		grpc.StatsHandler(s.edge.SizeStats()),
		grpc.ChainUnaryInterceptor(s.cutoff.Unary, s.gate.Unary, s.edge.Unary),
		grpc.ChainStreamInterceptor(s.cutoff.Stream, s.gate.Stream, s.edge.Stream),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
	)
	cav1.RegisterCertificateAuthorityServiceServer(g, &caService{s: s})
	healthpb.RegisterHealthServer(g, s.health)
	for _, p := range s.publicServices() {
		p.register(g)
	}
	s.registerAdmin(g, extraAdmin)
	s.track(g)
	return g
}

// AdminGRPCServer returns the gRPC server for the owner-only admin Unix
// socket (see ListenAdminSocket): the admin service, any extra admin
// services and the health service, without TLS.
func (s *Server) AdminGRPCServer(extraAdmin ...Registrar) *grpc.Server {
	g := grpc.NewServer(grpc.MaxRecvMsgSize(s.cfg.MaxRequestBytes),
		grpc.ChainUnaryInterceptor(s.edge.Unary), grpc.ChainStreamInterceptor(s.edge.Stream))
	healthpb.RegisterHealthServer(g, s.health)
	s.registerAdmin(g, extraAdmin)
	s.track(g)
	return g
}

func (s *Server) registerAdmin(g *grpc.Server, extra []Registrar) {
	admin.New(admin.Config{Authority: s.cfg.Authority, Ledger: s.cfg.Ledger, Tokens: s.cfg.Tokens,
		Entries: s.cfg.Entries, Logger: s.log}).Register(g)
	for _, r := range extra {
		r(g)
	}
}

func (s *Server) track(g *grpc.Server) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.servers = append(s.servers, g)
}

// Shutdown marks the server not serving, ends the SyncAgent and
// WatchBundle streams (with Unavailable, so agents reconnect elsewhere or
// later) and stops every gRPC server it built gracefully, or at once when
// ctx ends first.
func (s *Server) Shutdown(ctx context.Context) {
	s.health.Shutdown()
	s.stopOnce.Do(func() { close(s.stopping) })
	s.mu.Lock()
	servers := s.servers
	s.mu.Unlock()
	done := make(chan struct{})
	go func() {
		defer close(done)
		var wg sync.WaitGroup
		for _, g := range servers {
			wg.Go(g.GracefulStop)
		}
		wg.Wait()
	}()
	select {
	case <-done:
	case <-ctx.Done():
		for _, g := range servers {
			g.Stop()
		}
		<-done
	}
}
