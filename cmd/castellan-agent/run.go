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
	"github.com/castellan-dev/castellan/agent/attest/unixattest"
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
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	ca, err := newClient(cfg, td, reg, log)
	if err != nil {
		return err
	}
	defer ca.Close()
	c, err := cache.Open(filepath.Join(cfg.DataDir, "cache.db"), cache.Config{Logger: log})
	if err != nil {
		return err
	}
	defer c.Close()
	attestor, pods, err := newAttestor(ctx, cfg, td)
	if err != nil {
		return err
	}
	logMode, logCheck, err := newLogChecker(cfg.Log, ca, c, reg, log)
	if err != nil {
		return err
	}
	store := state.NewStore()
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
	g := newGroup(ctx)
	// Serve the cache and the socket at once; the CA comes after.
	g.run("manager", mgr.Run)
	g.run("endpoints", ep.Serve)
	g.run("http", func(ctx context.Context) error { return serveHTTP(ctx, cfg.HTTPListen, reg, mgr) })
	startAgentSVID(g, cfg, ca, token, log)
	log.Info("castellan-agent running", "socket", cfg.Socket, "http", cfg.HTTPListen, "server", cfg.ServerAddresses, "trust_domain", td.String())
	return g.wait()
}

// newClient returns the CA client of cfg, trusting --trust-bundle.
func newClient(cfg config, td spiffeid.TrustDomain, reg *prometheus.Registry, log *slog.Logger) (*client.Client, error) {
	var bundle *x509bundle.Bundle
	if cfg.TrustBundle != "" {
		b, err := client.LoadBundle(td, cfg.TrustBundle)
		if err != nil {
			return nil, fmt.Errorf("--trust-bundle: %w", err)
		}
		bundle = b
	}
	return client.New(client.Config{
		Addresses: cfg.ServerAddresses, FailoverTimeout: cfg.FailoverTimeout, TrustDomain: td, Bundle: bundle, DataDir: cfg.DataDir,
		Registry: reg, Logger: log,
	})
}

// newAttestor returns the workload attestor of --attestor and, on
// Kubernetes, the entries of the node's pods (nil otherwise).
func newAttestor(ctx context.Context, cfg config, td spiffeid.TrustDomain) (attest.Attestor, manager.EntrySource, error) {
	if cfg.Attestor != attestorK8s {
		return unixattest.New(), nil, nil
	}
	k, err := k8sAttestor(ctx, cfg)
	if err != nil {
		return nil, nil, err
	}
	return k, podentries.New(k, td), nil
}

// startAgentSVID obtains the agent SVID (join token or, on Kubernetes,
// the projected service-account token), removes a spent join token file,
// and keeps the SVID renewed in g. Without one the agent serves its cache.
func startAgentSVID(g *group, cfg config, ca *client.Client, token string, log *slog.Logger) {
	k8s := cfg.Attestor == attestorK8s
	spends := token != "" && spendsToken(ca.AgentSVID(), time.Now())
	if token != "" && !spends && !k8s {
		log.Warn("join token not used: the agent already holds a valid agent SVID; the unused token stays valid until it expires, so delete it", "file", cfg.JoinTokenFile)
	}
	attestAgent := func(ctx context.Context) error { return ca.Bootstrap(ctx, token) }
	if k8s {
		attestAgent = func(ctx context.Context) error { return ca.BootstrapK8s(ctx, cfg.K8sTokenFile) }
	}
	if err := ca.BootstrapRetrying(g.ctx, attestAgent); err != nil {
		if g.ctx.Err() == nil {
			log.Error(err.Error() + "; serving cached, still-valid SVIDs only")
		}
		return
	}
	if spends && cfg.JoinTokenFile != "" && !k8s {
		removeSpentTokenFile(cfg.JoinTokenFile, log)
	}
	g.run("agent SVID renewal", func(ctx context.Context) error {
		if err := ca.Run(ctx); err != nil && !errors.Is(err, client.ErrNoAgentSVID) {
			return err
		}
		return nil // expiry is logged; keep serving the cache
	})
}

// group runs the agent's parts until its context ends or one fails.
type group struct {
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	errs   chan error
}

func newGroup(ctx context.Context) *group {
	ctx, cancel := context.WithCancel(ctx)
	return &group{ctx: ctx, cancel: cancel, errs: make(chan error, 4)}
}

// run runs f in the group; its error (but not one after the group's
// end) ends the group.
func (g *group) run(name string, f func(context.Context) error) {
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		if err := f(g.ctx); err != nil && g.ctx.Err() == nil {
			select {
			case g.errs <- fmt.Errorf("%s: %w", name, err):
			default: // the group is ending on an earlier error
			}
		}
	}()
}

// wait waits for the group's context to end or a part to fail, then ends
// every part; it returns the failure, if any.
func (g *group) wait() error {
	var err error
	select {
	case <-g.ctx.Done():
	case err = <-g.errs:
	}
	g.cancel()
	g.wg.Wait()
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
