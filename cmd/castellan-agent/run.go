package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/castellan-dev/castellan/agent/attest"
	"github.com/castellan-dev/castellan/agent/cache"
	"github.com/castellan-dev/castellan/agent/client"
	"github.com/castellan-dev/castellan/agent/endpoints"
	"github.com/castellan-dev/castellan/agent/manager"
	"github.com/castellan-dev/castellan/agent/podentries"
	"github.com/castellan-dev/castellan/agent/state"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// run wires the agent together and serves until ctx is done.
func run(ctx context.Context, cfg config, log *slog.Logger) error {
	td, err := spiffeid.TrustDomainFromString(cfg.TrustDomain)
	if err != nil {
		return fmt.Errorf("--trust-domain: %w", err)
	}
	token, err := joinToken(cfg, log) // first: a bad token file stops the agent at once
	if err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("--data-dir: %w", err)
	}
	var bundle *x509bundle.Bundle
	if cfg.TrustBundle != "" {
		if bundle, err = client.LoadBundle(td, cfg.TrustBundle); err != nil {
			return fmt.Errorf("--trust-bundle: %w", err)
		}
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	ca, err := client.New(client.Config{
		Addresses: cfg.ServerAddresses, FailoverTimeout: cfg.FailoverTimeout, TrustDomain: td, Bundle: bundle, DataDir: cfg.DataDir,
		Registry: reg, Logger: log,
	})
	if err != nil {
		return err
	}
	defer ca.Close()
	c, err := cache.Open(filepath.Join(cfg.DataDir, "cache.db"), cache.WithLogger(log))
	if err != nil {
		return err
	}
	defer c.Close()
	store := state.NewStore()
	var (
		pods     manager.EntrySource
		attestor attest.Attestor = attest.NewUnix()
	)
	if cfg.Attestor == attestorK8s {
		k, err := k8sAttestor(ctx, cfg)
		if err != nil {
			return err
		}
		pods, attestor = podentries.New(k, td), k
	}
	logMode, logCheck, err := newLogChecker(cfg.Log, ca, c, reg, log)
	if err != nil {
		return err
	}
	mgr, err := manager.New(manager.Config{
		CA: ca, Pods: pods, Cache: c, Store: store, TrustDomain: td, OnBundle: ca.SetBundle, OnTaints: ca.Taint, Registry: reg, Logger: log,
		LogPolicy: logMode, LogCheck: optionalChecker(logCheck),
	})
	if err != nil {
		return err
	}
	cfg.Limits.ByPod = cfg.Attestor == attestorK8s
	ep, err := endpoints.New(endpoints.Config{
		SocketPath: cfg.Socket, Store: store, Attestor: attestor, Registry: reg, Logger: log, TrustDomain: td, Limits: cfg.Limits,
		HolderMaxAge: cfg.HolderMaxAge,
	})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	goRun := func(name string, f func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(ctx); err != nil && ctx.Err() == nil {
				errs <- fmt.Errorf("%s: %w", name, err)
			}
		}()
	}
	// Serve the cache and the socket at once; the CA comes after.
	goRun("manager", mgr.Run)
	goRun("endpoints", ep.Serve)
	goRun("http", func(ctx context.Context) error { return serveHTTP(ctx, cfg.HTTPListen, reg, mgr) })
	spends := token != "" && spendsToken(ca.AgentSVID(), time.Now())
	if token != "" && !spends && cfg.Attestor != attestorK8s {
		log.Warn("join token not used: the agent already holds a valid agent SVID; the unused token stays valid until it expires, so delete it", "file", cfg.JoinTokenFile)
	}
	attestAgent := func(ctx context.Context) error { return tokenBootstrap(ctx, ca, token) }
	if cfg.Attestor == attestorK8s {
		attestAgent = func(ctx context.Context) error { return ca.BootstrapK8s(ctx, cfg.K8sTokenFile) }
	}
	bootErr := bootstrap(ctx, attestAgent, log)
	if bootErr == nil && spends && cfg.JoinTokenFile != "" && cfg.Attestor != attestorK8s {
		removeSpentTokenFile(cfg.JoinTokenFile, log)
	}
	if bootErr == nil {
		goRun("agent SVID renewal", func(ctx context.Context) error {
			if err := ca.Run(ctx); err != nil && !errors.Is(err, client.ErrNoAgentSVID) {
				return err
			}
			return nil // expiry is logged; keep serving the cache
		})
	}
	log.Info("castellan-agent running", "socket", cfg.Socket, "http", cfg.HTTPListen, "server", cfg.ServerAddresses, "trust_domain", td.String())
	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errs:
	}
	cancel()
	wg.Wait()
	return runErr
}

// bootstrap obtains the agent SVID, retrying while the CA is unreachable.
// Without a usable SVID or token it logs what to do and returns, leaving
// the agent serving its cache.
func bootstrap(ctx context.Context, attestAgent func(context.Context) error, log *slog.Logger) error {
	delay := time.Second
	for {
		err := attestAgent(ctx)
		if err == nil {
			return nil
		}
		if errors.Is(err, client.ErrNoAgentSVID) || errors.Is(err, errTokenRefused) {
			log.Error(err.Error() + "; serving cached, still-valid SVIDs only")
			return err
		}
		log.Warn("bootstrap with the CA failed; retrying", "error", err.Error(), "retry_in", delay.String())
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
		delay = min(2*delay, 30*time.Second)
	}
}

// errTokenRefused marks a join token the CA refused: retrying it cannot
// succeed (and would be reported by the CA as another reuse).
var errTokenRefused = errors.New("the CA refused the join token; create a new one (castellanctl token create --node NAME --out FILE) and restart the agent with --join-token-file FILE")

// tokenBootstrap bootstraps with token; a refusal of the token itself
// (Unauthenticated, PermissionDenied, InvalidArgument) is errTokenRefused.
func tokenBootstrap(ctx context.Context, ca *client.Client, token string) error {
	err := ca.Bootstrap(ctx, token)
	switch status.Code(err) {
	case codes.Unauthenticated, codes.PermissionDenied, codes.InvalidArgument:
		return fmt.Errorf("%w: %w", errTokenRefused, err)
	}
	return err
}

// serveHTTP serves /metrics, /healthz and /readyz.
func serveHTTP(ctx context.Context, addr string, reg *prometheus.Registry, mgr *manager.Manager) error {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := mgr.Ready(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		if mgr.CAReachable() {
			fmt.Fprintln(w, "ready: CA reachable")
		} else {
			fmt.Fprintln(w, "ready: serving from cache, CA unreachable")
		}
	})
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("--http-listen: %w", err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.Serve(lis); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
