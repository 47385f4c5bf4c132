package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"

	"github.com/castellan-dev/castellan/ca/server"
	"github.com/castellan-dev/castellan/ca/store"
	"github.com/castellan-dev/castellan/ca/store/boltstore"
	"github.com/castellan-dev/castellan/internal/boltcheck"
	"github.com/prometheus/client_golang/prometheus"
)

// datastore is the CA's open store: the registry keyspace (join tokens
// and registration entries) and the ledger's.
type datastore struct {
	kind     string
	registry store.DB
	closers  []func() error
}

// openDatastore opens the datastore cfg selects: bbolt files in the data
// directory, or PostgreSQL (one connection pool, one keyspace each).
func openDatastore(ctx context.Context, cfg config, log *slog.Logger, reg prometheus.Registerer) (*datastore, error) {
	kind, dsn, err := cfg.datastore()
	if err != nil {
		return nil, fmt.Errorf("castellan-server: %w", err)
	}
	if kind == kindPostgres {
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
	return &datastore{kind: kindBolt, registry: db, closers: []func() error{db.Close}}, nil
}

// openPostgres connects to PostgreSQL. Never log dsn: it may hold the
// password.
func openPostgres(context.Context, string, *slog.Logger, prometheus.Registerer) (*datastore, error) {
	return nil, errors.New("castellan-server: this build has no PostgreSQL datastore yet; use --datastore bolt")
}

// stores are the stores readiness depends on.
func (d *datastore) stores() map[string]server.Pinger {
	return map[string]server.Pinger{"registry": d.registry}
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
