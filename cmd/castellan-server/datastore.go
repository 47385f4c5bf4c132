package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"

	"github.com/castellan-dev/castellan/ca/server/readiness"
	"github.com/castellan-dev/castellan/ca/store"
	"github.com/castellan-dev/castellan/ca/store/boltstore"
	"github.com/castellan-dev/castellan/ca/store/pgstore"
	"github.com/castellan-dev/castellan/cmd/castellan-server/internal/config"
	"github.com/castellan-dev/castellan/internal/boltcheck"
	"github.com/prometheus/client_golang/prometheus"
)

// datastore is the CA's open store: the registry keyspace (join tokens
// and registration entries), the authority journal (the CA's keys and
// their rotation: the "authority" keyspace, or authority.db on bolt) and,
// on PostgreSQL, the ledger's (a bolt ledger is its own file, opened by
// openLedger).
type datastore struct {
	kind      string
	registry  store.DB
	authority store.DB
	ledger    store.DB // nil for bolt
	closers   []func() error
}

// openDatastore opens the datastore cfg selects: bbolt files in the data
// directory, or PostgreSQL (one connection pool, one keyspace each).
func openDatastore(ctx context.Context, cfg config.Config, log *slog.Logger, reg prometheus.Registerer) (*datastore, error) {
	kind, dsn, err := cfg.ResolveDatastore()
	if err != nil {
		return nil, fmt.Errorf("castellan-server: %w", err)
	}
	if kind == config.KindPostgres {
		return openPostgres(ctx, dsn, log, reg)
	}
	path := filepath.Join(cfg.DataDir, registryFile)
	db, err := boltstore.Open(path)
	if errors.Is(err, boltcheck.ErrDamaged) {
		return nil, fmt.Errorf("castellan-server: refusing to start on a damaged registry (join tokens and entries): %w; restore it from a backup", err)
	}
	if err != nil {
		return nil, fmt.Errorf("castellan-server: open registry (is another server using %s?): %w", cfg.DataDir, err)
	}
	d := &datastore{kind: config.KindBolt, registry: db, closers: []func() error{db.Close}}
	if d.authority, err = openBoltJournal(cfg); err != nil {
		d.Close()
		return nil, err
	}
	d.closers = append(d.closers, d.authority.Close)
	return d, nil
}

// openPostgres connects to PostgreSQL (running the schema migrations)
// and opens the registry, authority and ledger keyspaces. dsn is never logged nor
// quoted: it may hold the password (pgstore redacts it from its errors).
func openPostgres(ctx context.Context, dsn string, log *slog.Logger, reg prometheus.Registerer) (*datastore, error) {
	conn, err := pgstore.Connect(ctx, dsn, pgstore.Options{Logger: log, Registry: reg})
	if err != nil {
		return nil, fmt.Errorf("castellan-server: datastore: %w", err)
	}
	d := &datastore{kind: config.KindPostgres, closers: []func() error{func() error { conn.Close(); return nil }}}
	for _, ks := range []struct {
		name string
		db   *store.DB
	}{{"registry", &d.registry}, {"authority", &d.authority}, {"ledger", &d.ledger}} {
		db, err := conn.Keyspace(ctx, ks.name)
		if err != nil {
			d.Close()
			return nil, fmt.Errorf("castellan-server: datastore: %w", err)
		}
		*ks.db = db
		d.closers = append(d.closers, db.Close)
	}
	log.Info("datastore: PostgreSQL", "keyspaces", "registry, authority, ledger")
	return d, nil
}

// stores are the stores readiness depends on: the registry and the
// ledger (which pings its own store, file or keyspace).
func (d *datastore) stores(ledger readiness.Pinger) map[string]readiness.Pinger {
	return map[string]readiness.Pinger{"registry": d.registry, "ledger": ledger}
}

// Close closes the keyspaces, then the connection, in reverse order of
// opening.
func (d *datastore) Close() error {
	var errs []error
	for i := len(d.closers) - 1; i >= 0; i-- {
		errs = append(errs, d.closers[i]())
	}
	return errors.Join(errs...)
}
