package pgstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// ErrSchemaTooNew refuses a database migrated by a newer binary: this one
// would not know how to keep its invariants. Upgrade this replica.
var ErrSchemaTooNew = errors.New("pgstore: the database schema is newer than this castellan-server knows")

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

// SchemaVersion is the newest schema this package knows.
func SchemaVersion() int { return migrations[len(migrations)-1].version }

// migrate applies the missing migrations in one transaction holding the
// migration advisory lock, so that replicas starting together apply each
// step once.
func (c *Conn) migrate(ctx context.Context) error {
	tx, err := c.pool.Begin(ctx)
	if err != nil {
		return c.errorf("schema migration", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	current, err := lockSchema(ctx, tx)
	if err != nil {
		return c.errorf("schema migration", err)
	}
	if current > SchemaVersion() {
		return fmt.Errorf("%w: database %s is at schema version %d, this binary knows up to %d: upgrade castellan-server", ErrSchemaTooNew, c.target, current, SchemaVersion())
	}
	for _, m := range migrations {
		if m.version <= current {
			continue
		}
		if _, err := tx.Exec(ctx, m.sql); err != nil {
			return fmt.Errorf("pgstore: schema migration %d (%s): %w", m.version, c.target, c.redact(err))
		}
		if _, err := tx.Exec(ctx, `INSERT INTO castellan_schema_migrations (version, applied_at) VALUES ($1, now())`, m.version); err != nil {
			return c.errorf("schema migration", err)
		}
		c.log.Info("pgstore: applied schema migration", "version", m.version, "database", c.target)
	}
	if err := tx.Commit(ctx); err != nil {
		return c.errorf("schema migration", err)
	}
	return nil
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
