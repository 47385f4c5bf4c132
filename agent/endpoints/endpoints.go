// Package endpoints serves the agent's workload-facing APIs, Envoy SDS and
// the SPIFFE Workload API, on one Unix socket, attesting the process behind
// every connection when it is accepted.
package endpoints

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/prometheus/client_golang/prometheus"
	workloadpb "github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	"github.com/castellan-dev/castellan/agent/attest"
	"github.com/castellan-dev/castellan/agent/sds"
	"github.com/castellan-dev/castellan/agent/state"
	"github.com/castellan-dev/castellan/agent/workloadapi"
)

// Limits that keep a misbehaving or idle client from costing the agent much
// (per-caller limits are in Limits).
const (
	maxStreamsPerConn    = 64               // concurrent streams on one connection
	maxRecvMsgSize       = 1 << 20          // requests are small; responses are not limited
	handshakeTimeout     = 5 * time.Second  // attestation + HTTP/2 preface, or the connection is dropped
	maxConnectionIdle    = 5 * time.Minute  // backstop to Limits.IdleTimeout
	keepaliveTime        = 2 * time.Minute  // ping a silent client after this
	keepaliveTimeout     = 20 * time.Second // and drop it if the ping is not answered
	keepaliveMinTime     = 10 * time.Second // clients may not ping more often than this
	connBufferSize       = 16 << 10         // per-connection read and write buffers
	gracefulStopDeadline = 2 * time.Second
)

// Config configures the endpoints. SocketPath, Store and Attestor are
// required.
type Config struct {
	// SocketPath is where the socket is created; its directory must exist.
	SocketPath string
	// Store is the state the APIs serve.
	Store *state.Store
	// Attestor identifies the process behind each connection.
	Attestor attest.Attestor
	// Registry receives the endpoints' metrics; nil keeps them unregistered.
	Registry *prometheus.Registry
	// Logger receives JSON logs; nil discards them.
	Logger *slog.Logger
	// TrustDomain is the agent's trust domain, for logs.
	TrustDomain spiffeid.TrustDomain
	// Limits bound each caller's connections and calls; zero fields take
	// the defaults.
	Limits Limits
	// HolderMaxAge is how old the descriptor scan behind each call's
	// holder check may be (0: attest.DefaultHolderMaxAge).
	HolderMaxAge time.Duration
}

// Endpoints is the agent's workload-facing gRPC server.
type Endpoints struct {
	cfg    Config
	server *grpc.Server
	limit  *limiter
}

// New builds the endpoints and registers their metrics; Serve starts them.
func New(cfg Config) (*Endpoints, error) {
	switch {
	case cfg.SocketPath == "":
		return nil, errors.New("endpoints: Config.SocketPath is required")
	case cfg.Store == nil:
		return nil, errors.New("endpoints: Config.Store is required")
	case cfg.Attestor == nil:
		return nil, errors.New("endpoints: Config.Attestor is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(cfg.Registry)
	if err != nil {
		return nil, err
	}
	sdsSrv, err := sds.New(sds.Config{Store: cfg.Store, Logger: cfg.Logger, Metrics: sds.Metrics{
		Streams: m.sdsStreams, NACKs: m.nacks, Unmatched: m.unmatched.WithLabelValues("sds"),
		PushLatency: m.pushLatency.WithLabelValues("sds"),
	}})
	if err != nil {
		return nil, err
	}
	wlSrv, err := workloadapi.New(workloadapi.Config{Store: cfg.Store, Logger: cfg.Logger, Metrics: workloadapi.Metrics{
		Streams: m.wlStreams, Unmatched: m.unmatched.WithLabelValues("workloadapi"),
		PushLatency: m.pushLatency.WithLabelValues("workloadapi"),
	}})
	if err != nil {
		return nil, err
	}
	if cfg.HolderMaxAge <= 0 {
		cfg.HolderMaxAge = attest.DefaultHolderMaxAge
	}
	creds := attest.NewCredentials(cfg.Attestor, attest.CredentialsConfig{HolderMaxAge: cfg.HolderMaxAge, OnFailure: func(reason string) {
		m.attestFailures.WithLabelValues(reason).Inc()
	}})
	lim := newLimiter(cfg.Limits, m, cfg.Logger)
	gs := grpc.NewServer(
		grpc.Creds(creds),
		grpc.ChainStreamInterceptor(lim.streamInterceptor),
		grpc.ChainUnaryInterceptor(lim.unaryInterceptor),
		grpc.ConnectionTimeout(handshakeTimeout),
		grpc.MaxRecvMsgSize(maxRecvMsgSize),
		grpc.MaxConcurrentStreams(maxStreamsPerConn),
		grpc.ReadBufferSize(connBufferSize),
		grpc.WriteBufferSize(connBufferSize),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: keepaliveMinTime, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			MaxConnectionIdle: maxConnectionIdle, Time: keepaliveTime, Timeout: keepaliveTimeout,
		}),
	)
	secretv3.RegisterSecretDiscoveryServiceServer(gs, sdsSrv)
	workloadpb.RegisterSpiffeWorkloadAPIServer(gs, wlSrv)
	return &Endpoints{cfg: cfg, server: gs, limit: lim}, nil
}

// Serve creates the socket (mode 0666, since workloads run as other users),
// replacing a stale socket file left by an earlier agent, serves until ctx
// is done, then closes every connection and removes the socket.
func (e *Endpoints) Serve(ctx context.Context) error {
	lis, err := listen(e.cfg.SocketPath)
	if err != nil {
		return err
	}
	defer os.Remove(e.cfg.SocketPath)
	e.cfg.Logger.Info("endpoints: serving SDS and the SPIFFE Workload API", "socket", e.cfg.SocketPath,
		"trust_domain", e.cfg.TrustDomain.Name(), "limits", e.limit.lim.String())
	errc := make(chan error, 1)
	go func() { errc <- e.server.Serve(e.limit.listener(lis)) }()
	select {
	case err := <-errc:
		return fmt.Errorf("endpoints: serve: %w", err)
	case <-ctx.Done():
	}
	stopped := make(chan struct{})
	go func() { e.server.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(gracefulStopDeadline): // streams are long-lived: cut them
		e.server.Stop()
		<-stopped
	}
	e.cfg.Logger.Info("endpoints: stopped", "socket", e.cfg.SocketPath)
	return nil
}

// listen creates the socket at path, removing a stale socket but refusing
// to remove anything else or to steal a socket another process serves.
func listen(path string) (*net.UnixListener, error) {
	dir := filepath.Dir(path)
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("endpoints: socket directory %s does not exist; create it first", dir)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("endpoints: %s exists and is not a socket; remove it or choose another --socket", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			_ = c.Close()
			return nil, fmt.Errorf("endpoints: %s is in use by another process (another agent running?)", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("endpoints: remove stale socket: %w", err)
		}
	}
	lis, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("endpoints: listen: %w", err)
	}
	if err := os.Chmod(path, 0o666); err != nil {
		_ = lis.Close()
		return nil, fmt.Errorf("endpoints: chmod socket: %w", err)
	}
	return lis, nil
}
