// Package server is the Castellan CA's gRPC front end: the
// castellan.ca.v1.CertificateAuthorityService that node agents call (over
// TLS with the server's own SVID, mutual TLS after attestation) and the
// castellan.admin.v1.AdminService for operators (on an owner-only Unix
// socket, or over mutual TLS for configured admin identities).
//
// Every call first passes a gate that refuses revoked client certificates
// and agent certificates of banned nodes (bans.go). Every request goes
// authn -> authz -> sign -> ledger -> response: a
// refused request is counted in castellan_csr_total with its reason and
// never reaches the ledger; a signed certificate is durable in the ledger
// before the caller sees it.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	adminv1 "github.com/castellan-dev/castellan/api/castellan/admin/v1"
	cav1 "github.com/castellan-dev/castellan/api/castellan/ca/v1"
	"github.com/castellan-dev/castellan/ca/authn"
	"github.com/castellan-dev/castellan/ca/authority"
	"github.com/castellan-dev/castellan/ca/authz"
	"github.com/castellan-dev/castellan/ca/ledger/entry"
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
	// MaxCSRBytes bounds one CSR; real ones are well under 4 KiB.
	MaxCSRBytes = 64 << 10
)

// Ledger is what the server needs of the issuance ledger (*ledger.Ledger).
type Ledger interface {
	// Append records events durably before returning, in order, and
	// returns their indexes.
	Append(ctx context.Context, events ...entry.Event) ([]uint64, error)
	// RevokedSerials returns the lower-case hex serials of revoked
	// certificates that have not expired at now.
	RevokedSerials(now time.Time) []string
	// RevocationsChanged returns a channel closed at the next revocation.
	RevocationsChanged() <-chan struct{}
	// IsRevoked reports whether the certificate with this serial is
	// revoked and unexpired at now.
	IsRevoked(serial string, now time.Time) bool
	// Children returns the serials renewed from serial (at most max).
	Children(ctx context.Context, serial string, max int) ([]string, error)
	// Revoke revokes one certificate (revocation.ErrAlreadyRevoked if it was).
	Revoke(ctx context.Context, serial, reason string) (entry.Entry, error)
	// Bans records node agents and bans.
	Bans
	// logProver proves the witnessed log to agents (GetLogProof).
	logProver
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
	Clock func() time.Time
	// Stores are the stores the server needs to issue, by name (e.g.
	// "registry", "ledger"): MonitorReadiness reports the server ready
	// only while each answers its Ping.
	Stores map[string]Pinger
	// ReadinessInterval is how often MonitorReadiness pings the Stores
	// (0: DefaultReadinessInterval).
	ReadinessInterval time.Duration
	// Quota, when set, limits workload issuance per node and per identity
	// (a *quota.Limiter); a refusal is its error (ResourceExhausted).
	Quota interface {
		Take(node, identity string, ttl time.Duration) error
	}
	// MaxCSRsInFlight bounds the workload CSRs worked on at once, over all
	// callers (admit.go; 0: DefaultMaxCSRsInFlight, negative: unbounded).
	MaxCSRsInFlight int
	// AdmissionWait is how long a call may wait for room under
	// MaxCSRsInFlight before it is refused with ResourceExhausted and a
	// RetryInfo delay (0: DefaultAdmissionWait).
	AdmissionWait time.Duration
}

// Server holds the CA's gRPC services. Create it with New, serve it with
// GRPCServer and AdminGRPCServer, and keep its own SVID fresh with Run.
type Server struct {
	cfg     Config
	td      spiffeid.TrustDomain
	log     *slog.Logger
	clock   func() time.Time
	metrics *metrics
	health  *health.Server
	bundle  *bundleState
	trust   clientTrust // the pool client certificates are verified against
	svid    *serverSVID
	admins  map[spiffeid.ID]bool
	admit   *admission

	mu       sync.Mutex
	servers  []*grpc.Server
	public   []publicService // added by ServePublic
	stopping chan struct{}   // closed by Shutdown: long-lived streams end
	stopOnce sync.Once
}

// New checks cfg, issues the server's own SVID
// (spiffe://<td>/castellan/server) and returns the server.
func New(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.Authority == nil || cfg.Ledger == nil || cfg.Attestor == nil || cfg.Tokens == nil || cfg.Entries == nil {
		return nil, errors.New("server: Authority, Ledger, Attestor, Tokens and Entries are required")
	}
	if cfg.Authorizer == nil {
		cfg.Authorizer = &authz.NodeAuthorizer{Entries: cfg.Entries}
	}
	if cfg.AgentTTL == 0 {
		cfg.AgentTTL = DefaultAgentTTL
	}
	if _, err := cfg.Authority.Lifetime().For(cfg.AgentTTL, 0, ""); err != nil {
		return nil, fmt.Errorf("server: agent TTL: %w", err)
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
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.ReadinessInterval <= 0 {
		cfg.ReadinessInterval = DefaultReadinessInterval
	}
	if cfg.MaxCSRsInFlight == 0 {
		cfg.MaxCSRsInFlight = DefaultMaxCSRsInFlight()
	}
	if cfg.AdmissionWait <= 0 {
		cfg.AdmissionWait = DefaultAdmissionWait
	}
	names, err := authority.ParseServerNames(cfg.ServerNames)
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	m, err := newMetrics(cfg.Registry)
	if err != nil {
		return nil, fmt.Errorf("server: register metrics: %w", err)
	}
	s := &Server{
		cfg: cfg, td: cfg.Authority.TrustDomain(), log: cfg.Logger, clock: cfg.Clock,
		metrics: m, health: health.NewServer(), bundle: newBundleState(cfg.Authority.Bundle()),
		admins: map[spiffeid.ID]bool{}, stopping: make(chan struct{}),
		admit: newAdmission(cfg.MaxCSRsInFlight, cfg.AdmissionWait, m),
	}
	for _, id := range cfg.AdminIDs {
		s.admins[id] = true
	}
	s.trust.base = s.baseTLSConfig()
	s.trust.set(cfg.Authority.Snapshot().Roots)
	m.caExpiry.WithLabelValues("root").Set(float64(cfg.Authority.Root().NotAfter.Unix()))
	m.caExpiry.WithLabelValues("intermediate").Set(float64(cfg.Authority.Intermediate().NotAfter.Unix()))
	s.svid = &serverSVID{s: s, names: names}
	if err := s.svid.renew(ctx); err != nil {
		return nil, err
	}
	if err := s.reconcileBans(ctx); err != nil {
		return nil, err
	}
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
	return s.svid.run(ctx)
}

// Health returns the gRPC health service. MonitorReadiness sets its
// overall status; a caller that does not run it sets the status itself.
func (s *Server) Health() *health.Server { return s.health }

// TLSConfig returns the server TLS configuration: the server's SVID, TLS
// 1.3, and client certificates optional but verified against the trust
// bundle when given (the bundle of the handshake's time: it follows CA
// rotations, see Run).
func (s *Server) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) { return s.trust.cfg.Load(), nil },
	}
}

// baseTLSConfig is TLSConfig without the client pool (clientTrust adds it).
func (s *Server) baseTLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS13,
		ClientAuth:     tls.VerifyClientCertIfGiven,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return s.svid.current(), nil },
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
		grpc.StatsHandler(sizeStats{m: s.metrics}),
		grpc.ChainUnaryInterceptor(s.revokedUnaryGate, s.adminUnaryGate, s.edgeUnary),
		grpc.ChainStreamInterceptor(s.revokedStreamGate, s.adminStreamGate, s.edgeStream),
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
		grpc.ChainUnaryInterceptor(s.edgeUnary), grpc.ChainStreamInterceptor(s.edgeStream))
	healthpb.RegisterHealthServer(g, s.health)
	s.registerAdmin(g, extraAdmin)
	s.track(g)
	return g
}

func (s *Server) registerAdmin(g *grpc.Server, extra []Registrar) {
	adminv1.RegisterAdminServiceServer(g, &adminService{s: s})
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

// isPublicMethod reports whether method authenticates callers itself (the
// CA service checks agent SVIDs per call; health is open).
func isPublicMethod(method string) bool {
	return strings.HasPrefix(method, "/castellan.ca.v1.CertificateAuthorityService/") ||
		strings.HasPrefix(method, "/grpc.health.v1.Health/")
}

// checkAdmin allows a call on the TCP port to any method other than the
// CA, health and ServePublic services only for configured admin identities.
func (s *Server) checkAdmin(ctx context.Context, method string) error {
	if isPublicMethod(method) || s.isPublicService(method) {
		return nil
	}
	id, err := authn.PeerID(ctx)
	if err != nil {
		return err
	}
	if !s.admins[id] {
		s.log.WarnContext(ctx, "admin call refused", "method", method, "spiffe_id", id.String())
		return authn.Fail(authn.ReasonNotAdmin, "%s is not an admin identity of this CA; use the admin socket or a configured --admin-id", id)
	}
	return nil
}

func (s *Server) adminUnaryGate(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if err := s.checkAdmin(ctx, info.FullMethod); err != nil {
		return nil, err
	}
	return h(ctx, req)
}

func (s *Server) adminStreamGate(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if err := s.checkAdmin(ss.Context(), info.FullMethod); err != nil {
		return err
	}
	return h(srv, ss)
}
