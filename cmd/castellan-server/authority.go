package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/castellan-dev/castellan/ca/authority"
	"github.com/castellan-dev/castellan/ca/authority/journal"
	"github.com/castellan-dev/castellan/ca/ledger"
	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/ca/ledger/reserve"
	"github.com/castellan-dev/castellan/ca/store"
	"github.com/castellan-dev/castellan/ca/store/boltstore"
	"github.com/castellan-dev/castellan/cmd/castellan-server/internal/config"
	"github.com/castellan-dev/castellan/internal/serial"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// authorityFile is the authority journal of a bbolt datastore; on
// PostgreSQL the journal is the datastore's "authority" keyspace.
const authorityFile = "authority.db"

// rotationTick is how often the server runs a rotation step
// (authority.Tick: plug-in files, prepare, activate, retire).
const rotationTick = 5 * time.Second

// openBoltJournal opens the authority journal of a bbolt datastore, its
// own file in the data directory.
func openBoltJournal(cfg config.Config) (store.DB, error) {
	path := filepath.Join(cfg.DataDir, authorityFile)
	db, err := boltstore.Open(path)
	if err != nil {
		return nil, fmt.Errorf("castellan-server: open the authority journal %s (is another server using %s?): %w", path, cfg.DataDir, err)
	}
	return db, nil
}

// openAuthority opens the CA's authorities from journal, every transition
// recorded in led before it commits (led must be open: the first start
// records the bootstrap). A nil led refuses every transition (forensic
// mode: nothing may change unlogged).
func openAuthority(ctx context.Context, cfg config.Config, td spiffeid.TrustDomain, journal store.DB, led *ledger.Ledger,
	reg prometheus.Registerer, log *slog.Logger) (*authority.Authority, error) {
	return authority.Open(ctx, authority.Config{
		TrustDomain: td, DataDir: cfg.DataDir, RootCertFile: cfg.RootCert,
		IntermediateCertFile: cfg.IntermediateCert, IntermediateKeyFile: cfg.IntermediateKey,
		DefaultTTL: cfg.DefaultTTL, MaxTTL: cfg.MaxTTL, Logger: log,
		Journal: journal, KEKFile: cfg.KEKFile, PublishDelay: cfg.PublishDelay, PrepareAt: cfg.PrepareAt,
		OnTransition: recordTransition(led, td), Registry: reg,
	})
}

// recordTransition returns the hook that appends a ca_key_change event
// for every authority transition: the signing certificate (serial,
// validity, DER, key hash) and, in Reason, the authority, its states and
// why.
func recordTransition(led *ledger.Ledger, td spiffeid.TrustDomain) func(context.Context, journal.Transition) error {
	return func(ctx context.Context, tr journal.Transition) error {
		if led == nil {
			return fmt.Errorf("the ledger is open read-only (--ledger-read-only-forensics): no CA change is made unlogged")
		}
		_, err := led.Append(reserve.Use(ctx), transitionEvent(tr, td))
		return err
	}
}

// transitionEvent is the ledger event of one authority transition.
func transitionEvent(tr journal.Transition, td spiffeid.TrustDomain) entry.Event {
	from := string(tr.From)
	if from == "" {
		from = "new"
	}
	ev := entry.Event{
		Kind: entry.KindCAKeyChange, Time: tr.At, SPIFFEID: td.IDString(),
		Reason: fmt.Sprintf("authority %s (%s): %s -> %s: %s", tr.Authority.ID, tr.Authority.Source, from, tr.To, tr.Reason),
	}
	if len(tr.Authority.Chain) > 0 {
		c := tr.Authority.Chain[0]
		sum := sha256.Sum256(c.RawSubjectPublicKeyInfo)
		ev.Serial, ev.NotBefore, ev.NotAfter = serial.FromBig(c.SerialNumber).String(), c.NotBefore, c.NotAfter
		ev.CertDER, ev.PublicKeySHA256 = c.Raw, hex.EncodeToString(sum[:])
	}
	return ev
}

// runAuthority runs the CA's rotation (authority.Run: the journal
// followed, a rotation step every rotationTick) and publishes every change
// outside the gRPC services (publishAuthority) until ctx ends.
func runAuthority(ctx context.Context, cfg config.Config, d *deps) {
	ticker := time.NewTicker(rotationTick)
	defer ticker.Stop()
	go publishAuthority(ctx, cfg, d.authority, d.setBundle, d.log)
	_ = d.authority.Run(ctx, ticker.C)
}

// publishAuthority keeps what the server publishes outside its gRPC
// services in step with the CA's authorities until ctx ends: bundle.pem,
// and the trust bundle ConfigMaps (setBundle, nil without them). The gRPC
// services (server.Server.Run) and the CRL (crl.Handler) follow by
// themselves.
func publishAuthority(ctx context.Context, cfg config.Config, auth *authority.Authority,
	setBundle func(*x509bundle.Bundle) error, log *slog.Logger) {
	var last uint64
	for {
		changed := auth.Changed()
		snap := auth.Snapshot()
		if snap.Generation != last {
			last = snap.Generation
			b := x509bundle.FromX509Authorities(auth.TrustDomain(), snap.Roots)
			if err := writeBundlePEM(filepath.Join(cfg.DataDir, bundleFile), b); err != nil {
				log.Error("bundle.pem not updated", "error", err.Error())
			}
			if setBundle != nil {
				if err := setBundle(b); err != nil {
					log.Error("trust bundle ConfigMaps not updated", "error", err.Error())
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
	}
}
