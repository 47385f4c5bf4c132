package main

import (
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/castellan-dev/castellan/ca/audit"
	"github.com/castellan-dev/castellan/ca/authn"
	"github.com/castellan-dev/castellan/ca/authority"
	"github.com/castellan-dev/castellan/ca/authz"
	"github.com/castellan-dev/castellan/ca/crl"
	"github.com/castellan-dev/castellan/ca/ledger"
	"github.com/castellan-dev/castellan/ca/quota"
	"github.com/castellan-dev/castellan/ca/server"
	"github.com/castellan-dev/castellan/ca/server/adminsock"
	"github.com/castellan-dev/castellan/ca/server/readiness"
	"github.com/castellan-dev/castellan/ca/tlog"
	"github.com/castellan-dev/castellan/ca/witness"
	"github.com/castellan-dev/castellan/cmd/castellan-server/internal/config"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// Files in the data directory besides the CA's own.
const (
	registryFile  = "registry.db" // join tokens and registration entries
	ledgerFile    = "ledger.db"
	bundleFile    = "bundle.pem" // trust bundle for agents' --trust-bundle
	adminSockFile = "admin.sock"
)

// shutdownGrace bounds a graceful stop.
const shutdownGrace = 10 * time.Second

// deps are the components the server is wired from.
type deps struct {
	authority *authority.Authority
	ledger    *ledger.Ledger
	registry  *prometheus.Registry
	srv       *server.Server
	ready     *readiness.Monitor // sets srv's health from the stores
	admins    []spiffeid.ID      // may call the admin and audit APIs over mTLS
	log       *slog.Logger
	crl       *crl.Handler                   // /crl, signed by the active authority
	setBundle func(*x509bundle.Bundle) error // republishes the ConfigMaps (nil: none)
	witnesses *witness.Policy                // nil: the log is not witnessed
}

// adminServices are the services served next to the admin service, on the
// admin socket and (for admin identities) on the TCP port.
func adminServices(d *deps) []server.Registrar {
	svc := audit.NewService(d.ledger, audit.Config{Authorizer: audit.AdminAuthorizer(d.admins...), Logger: d.log})
	return []server.Registrar{svc.Register}
}

// httpMux serves /metrics, /healthz, /readyz, /crl (the CRL of revoked
// SVIDs, signed by the intermediate) and /log/ (the ledger, C2SP tlog-tiles).
func httpMux(d *deps) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("GET /crl", d.crl)
	mux.Handle("GET /log/", http.StripPrefix("/log", tlog.NewHandler(d.ledger, tlogOptions(d))))
	mux.Handle("GET /metrics", promhttp.HandlerFor(d.registry, promhttp.HandlerOpts{Registry: d.registry}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		resp, err := d.srv.Health().Check(r.Context(), &healthpb.HealthCheckRequest{})
		if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	return mux
}

// openRegistry opens the join tokens and the registration entries, kept in
// the datastore's registry keyspace.
func openRegistry(ctx context.Context, cfg config.Config, td spiffeid.TrustDomain, ds *datastore, reg prometheus.Registerer, log *slog.Logger) (*authn.JoinTokens, *authz.Entries, error) {
	tokens, err := authn.NewJoinTokens(ctx, ds.registry, authn.JoinTokensConfig{Logger: log, Registry: reg})
	if err != nil {
		return nil, nil, err
	}
	entries, err := authz.NewEntries(ctx, ds.registry, td, authz.EntriesConfig{MaxTTL: cfg.MaxTTL, Logger: log})
	if err != nil {
		return nil, nil, err
	}
	return tokens, entries, nil
}

// adminIDs parses --admin-id (validated by config.Load).
func adminIDs(cfg config.Config) []spiffeid.ID {
	var admins []spiffeid.ID
	for _, s := range cfg.AdminIDs {
		admins = append(admins, spiffeid.RequireFromString(s))
	}
	return admins
}

// serve runs the server until ctx ends.
func serve(ctx context.Context, cfg config.Config, log *slog.Logger) error {
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("castellan-server: data dir: %w", err)
	}
	td := spiffeid.RequireTrustDomainFromString(cfg.TrustDomain)
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	if cfg.LedgerReadOnlyForensics {
		return serveForensic(ctx, cfg, log, reg, td)
	}
	return serveCA(ctx, cfg, td, reg, log)
}

// serveCA opens the CA's state and serves it until ctx ends.
func serveCA(ctx context.Context, cfg config.Config, td spiffeid.TrustDomain, reg *prometheus.Registry, log *slog.Logger) error {
	ds, err := openDatastore(ctx, cfg, log, reg)
	if err != nil {
		return err
	}
	defer ds.Close()
	quotas, err := quota.New(cfg.Quotas(reg))
	if err != nil {
		return err
	}
	led, err := openLedger(cfg, ds, log, reg, quotas.Forgive)
	if err != nil {
		return err
	}
	defer led.Close()
	// The ledger first: the authority records every transition in it,
	// the bootstrap of a new CA included.
	auth, err := openAuthority(ctx, cfg, td, ds.authority, led, reg, log)
	if err != nil {
		return err
	}
	if err := writeBundle(filepath.Join(cfg.DataDir, bundleFile), auth); err != nil {
		return err
	}
	tokens, entries, err := openRegistry(ctx, cfg, td, ds, reg, log)
	if err != nil {
		return err
	}
	defer entries.Close()
	admins := adminIDs(cfg)
	k8sAttestor, podAuthorizer, err := kubernetesAuth(ctx, cfg, td, reg, log)
	if err != nil {
		return err
	}
	setBundle, err := publishBundle(ctx, cfg, auth.Bundle(), reg, log)
	if err != nil {
		return err
	}
	srv, err := server.New(ctx, server.Config{
		Quota:     quotas,
		Authority: auth, Ledger: led, Attestor: &authn.JoinTokenAttestor{Tokens: tokens, K8s: k8sAttestor},
		Authorizer: &authz.NodeAuthorizer{Entries: entries, Pods: podAuthorizer},
		Tokens:     tokens, Entries: entries, AgentTTL: cfg.AgentTTL, AdminIDs: admins,
		ServerNames: cfg.ServerNames, Registry: reg, Logger: log,
		MaxCSRsInFlight: cfg.AdmissionCapacity(), AdmissionWait: cfg.AdmissionWait,
	})
	if err != nil {
		return err
	}
	if err := serveIstio(ctx, cfg, td, srv, auth, led, podAuthorizer, log); err != nil {
		return err
	}
	d := &deps{authority: auth, ledger: led, registry: reg, srv: srv, admins: admins, log: log, setBundle: setBundle}
	if err := d.complete(cfg, ds); err != nil {
		return err
	}
	return listenAndServe(ctx, cfg, log, d, tokens)
}

// complete adds to d what is built from its parts: the readiness monitor
// of its server over ds's stores, the CRL and the witness policy.
func (d *deps) complete(cfg config.Config, ds *datastore) error {
	var err error
	d.ready, err = readiness.New(readiness.Config{Health: d.srv.Health(), Stores: ds.stores(d.ledger), Logger: d.log, Registry: d.registry})
	if err != nil {
		return err
	}
	d.crl = crl.New(d.ledger, d.authority, crl.Config{Logger: d.log})
	d.witnesses, err = cfg.Witness.Policy()
	return err
}

// listenAndServe opens the listeners, serves until ctx ends, then stops
// gracefully.
func listenAndServe(ctx context.Context, cfg config.Config, log *slog.Logger, d *deps, tokens *authn.JoinTokens) error {
	grpcLis, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("castellan-server: --listen: %w", err)
	}
	httpLis, err := net.Listen("tcp", cfg.HTTPListen)
	if err != nil {
		grpcLis.Close()
		return fmt.Errorf("castellan-server: --http-listen: %w", err)
	}
	adminLis, err := adminsock.Listen(filepath.Join(cfg.DataDir, adminSockFile), log)
	if err != nil {
		grpcLis.Close()
		httpLis.Close()
		return err
	}
	grpcSrv, admin := d.srv.GRPCServer(adminServices(d)...), d.srv.AdminGRPCServer(adminServices(d)...)
	httpSrv := &http.Server{Handler: httpMux(d), ReadHeaderTimeout: 10 * time.Second}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 6)
	goServe := func(name string, f func() error) {
		go func() {
			if err := f(); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, grpc.ErrServerStopped) {
				errc <- fmt.Errorf("castellan-server: %s: %w", name, err)
				return
			}
			errc <- nil
		}()
	}
	goServe("grpc", func() error { return grpcSrv.Serve(grpcLis) })
	goServe("admin socket", func() error { return admin.Serve(adminLis) })
	goServe("http", func() error { return httpSrv.Serve(httpLis) })
	go func() { _ = d.srv.Run(ctx) }()
	go runAuthority(ctx, cfg, d)
	go d.ledger.Maintain(ctx, time.Hour)
	startWitnessing(ctx, cfg.Witness, d)
	go pruneTokens(ctx, tokens, log)
	go d.ready.Run(ctx)
	log.Info("castellan-server serving", "listen", grpcLis.Addr().String(), "http_listen", httpLis.Addr().String(),
		"admin_socket", adminLis.Addr().String(), "trust_domain", cfg.TrustDomain)

	var first error
	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case first = <-errc:
		log.Error("server stopped", "error", fmt.Sprint(first))
	}
	cancel()
	sctx, scancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer scancel()
	d.srv.Shutdown(sctx)
	_ = httpSrv.Shutdown(sctx)
	return first
}

// pruneTokens removes long-expired join tokens every hour.
func pruneTokens(ctx context.Context, tokens *authn.JoinTokens, log *slog.Logger) {
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if n, err := tokens.Prune(ctx); err != nil && ctx.Err() == nil {
				log.Error("join token prune failed", "error", err.Error())
			} else if n > 0 {
				log.Info("pruned expired join tokens", "count", n)
			}
		}
	}
}

// writeBundle writes a's trust bundle to path (writeBundlePEM).
func writeBundle(path string, a *authority.Authority) error { return writeBundlePEM(path, a.Bundle()) }

// writeBundlePEM writes the trust bundle PEM (mode 0644: it is public) for
// agents' --trust-bundle, atomically. It is rewritten on every change of
// the bundle (publishAuthority).
func writeBundlePEM(path string, b *x509bundle.Bundle) error {
	var buf []byte
	for _, c := range b.X509Authorities() {
		buf = append(buf, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, buf, 0o644); err != nil {
		return fmt.Errorf("castellan-server: write bundle: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("castellan-server: write bundle: %w", err)
	}
	return nil
}
