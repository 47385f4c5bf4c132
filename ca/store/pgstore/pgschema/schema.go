// Package pgschema owns the PostgreSQL store's schema (package pgstore):
// its tables and the versioned migrations that create and upgrade them,
// applied once each across replicas under an advisory lock, and the refusal
// of a database migrated by a newer binary.
package pgschema

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// ErrTooNew refuses a database migrated by a newer binary: this one
// would not know how to keep its invariants. Upgrade this replica.
var ErrTooNew = errors.New("the database schema is newer than this castellan-server knows")

// migrationLock is the pg_advisory_xact_lock key serializing migrations
// across replicas ("castella" in ASCII).
const migrationLock int64 = 0x63617374656c6c61

// migration is one step of the schema, applied once, in order.
type migration struct {
	version int
	sql     string
}

// migrations is the schema's history. Append only: a released step is
// never edited.
var migrations = []migration{
	{1, `
CREATE TABLE castellan_keyspaces (
	name    text COLLATE "C" PRIMARY KEY,
	version bigint NOT NULL
);
CREATE TABLE castellan_buckets (
	keyspace text COLLATE "C" NOT NULL REFERENCES castellan_keyspaces (name),
	name     bytea NOT NULL,
	PRIMARY KEY (keyspace, name)
);
CREATE TABLE castellan_kv (
	keyspace text COLLATE "C" NOT NULL,
	bucket   bytea NOT NULL,
	key      bytea NOT NULL,
	value    bytea NOT NULL,
	PRIMARY KEY (keyspace, bucket, key)
);`},
}

// Version is the newest schema this package knows.
func Version() int { return migrations[len(migrations)-1].version }

// StepError is a migration the database refused.
type StepError struct {
	Version int   // the migration's version
	Err     error // the database's error
}

func (e *StepError) Error() string { return fmt.Sprintf("schema migration %d: %v", e.Version, e.Err) }

// Unwrap returns the database's error.
func (e *StepError) Unwrap() error { return e.Err }

// Migrate applies the missing migrations in one transaction holding the
// migration advisory lock, so that replicas starting together apply each
// step once; applied is called after each step. It returns ErrTooNew
// (wrapped, with both versions) for a database at a newer schema, a
// *StepError for a step the database refused, and otherwise the
// database's error.
func Migrate(ctx context.Context, pool *pgxpool.Pool, applied func(version int)) error {
	tx, err := pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	current, err := lockSchema(ctx, tx)
	if err != nil {
		return err
	}
	if current > Version() {
		return fmt.Errorf("%w: it is at schema version %d, this binary knows up to %d: upgrade castellan-server", ErrTooNew, current, Version())
	}
	for _, m := range migrations {
		if m.version <= current {
			continue
		}
		if _, err := tx.Exec(ctx, m.sql); err != nil {
			return &StepError{Version: m.version, Err: err}
		}
		if _, err := tx.Exec(ctx, `INSERT INTO castellan_schema_migrations (version, applied_at) VALUES ($1, now())`, m.version); err != nil {
			return err
		}
		applied(m.version)
	}
	return tx.Commit(ctx)
}

// lockSchema takes the migration lock and returns the schema version.
func lockSchema(ctx context.Context, tx pgx.Tx) (int, error) {
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, migrationLock); err != nil {
		return 0, err
	}
	if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS castellan_schema_migrations (
	version    int PRIMARY KEY,
	applied_at timestamptz NOT NULL
)`); err != nil {
		return 0, err
	}
	var v int
	err := tx.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM castellan_schema_migrations`).Scan(&v)
	return v, err
}
