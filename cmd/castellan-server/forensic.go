package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"github.com/castellan-dev/castellan/ca/audit"
	"github.com/castellan-dev/castellan/ca/crl"
	"github.com/castellan-dev/castellan/ca/ledger"
	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/ca/server/adminsock"
	"github.com/castellan-dev/castellan/cmd/castellan-server/internal/config"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
)

// openLedger opens the ledger: in the datastore's ledger keyspace on
// PostgreSQL (ds.ledger), else the bbolt file in the data directory. A
// ledger file that fails its integrity check stops the server with a
// message naming the file and what to do. onRevoke is called with each
// revoked certificate's node and SPIFFE ID.
func openLedger(cfg config.Config, ds *datastore, log *slog.Logger, reg *prometheus.Registry, onRevoke func(node, id string)) (*ledger.Ledger, error) {
	opts := ledger.Config{Logger: log, Registry: reg, OnRevoke: onRevoke, KeyFile: cfg.LedgerKeyFile}
	var err error
	if opts.Origin, err = cfg.Witness.Origin(cfg.TrustDomain, ledgerKeyFile(cfg, ds)); err != nil {
		return nil, err
	}
	if ds != nil && ds.ledger != nil {
		l, err := ledger.New(ds.ledger, opts)
		if err != nil {
			return nil, fmt.Errorf("castellan-server: open the ledger in the datastore: %w", err)
		}
		return l, nil
	}
	path := filepath.Join(cfg.DataDir, ledgerFile)
	opts.DiskReserve, opts.ReadOnly = uint64(cfg.LedgerDiskReserve), cfg.LedgerReadOnlyForensics
	l, err := ledger.Open(path, opts)
	if errors.Is(err, entry.ErrDamaged) {
		return nil, fmt.Errorf("castellan-server: refusing to start on a damaged ledger: %w; "+
			"to read what is left, start with --ledger-read-only-forensics (audit API on the admin socket, no issuance), "+
			"and check a copy with `castellanctl ledger verify --db %s --log-key KEY`", err, path)
	}
	return l, err
}

// forensicNotice is what /readyz and the log say in forensic mode.
const forensicNotice = "the ledger is open read-only for forensics (--ledger-read-only-forensics): no certificate is issued and the gRPC port is not served; the audit API is on the admin socket"

// serveForensic serves a ledger opened read-only: the audit API on the
// admin socket (castellanctl certs, ledger), and /metrics, /healthz,
// /readyz (never ready) and /crl over HTTP. Nothing is issued: issuing
// needs the ledger to log it, and the CA's own SVID is an issuance too,
// so the agents' gRPC port is not served; agents keep serving their
// caches until a repaired ledger is back.
func serveForensic(ctx context.Context, cfg config.Config, log *slog.Logger, reg *prometheus.Registry, td spiffeid.TrustDomain) error {
	led, err := openLedger(cfg, nil, log, reg, nil)
	if err != nil {
		return err
	}
	defer led.Close()
	journal, err := openBoltJournal(cfg)
	if err != nil {
		return err
	}
	defer journal.Close()
	auth, err := openAuthority(ctx, cfg, td, journal, nil, reg, log) // no ledger to record in: no transition
	if err != nil {
		return err
	}
	if err := writeBundle(filepath.Join(cfg.DataDir, bundleFile), auth); err != nil {
		return err
	}
	httpLis, err := net.Listen("tcp", cfg.HTTPListen)
	if err != nil {
		return fmt.Errorf("castellan-server: --http-listen: %w", err)
	}
	adminLis, err := adminsock.Listen(filepath.Join(cfg.DataDir, adminSockFile), log)
	if err != nil {
		httpLis.Close()
		return err
	}
	g := grpc.NewServer()
	audit.NewService(led, audit.Config{Authorizer: audit.AdminAuthorizer(), Logger: log}).Register(g)
	mux := http.NewServeMux()
	mux.Handle("GET /crl", crl.New(led, auth, crl.Config{Logger: log}))
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "not ready: "+forensicNotice, http.StatusServiceUnavailable)
	})
	httpSrv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 2)
	go func() { errc <- g.Serve(adminLis) }()
	go func() { errc <- httpSrv.Serve(httpLis) }()
	log.Error(forensicNotice, "ledger", filepath.Join(cfg.DataDir, ledgerFile),
		"admin_socket", adminLis.Addr().String(), "http_listen", httpLis.Addr().String())
	select {
	case <-ctx.Done():
		err = nil
	case err = <-errc:
	}
	g.Stop()
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	_ = httpSrv.Shutdown(sctx)
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("castellan-server: %w", err)
	}
	return nil
}
