// Package pgstore implements the store contract (package store) on
// PostgreSQL, shared by every replica of the CA.
//
// A Conn is one process's connection pool to the database; each keyspace
// (Conn.Keyspace) is a *DB. The layout, created by versioned migrations
// that Connect applies under an advisory lock:
//
//   - castellan_keyspaces(name, version): one coordinator row per
//     keyspace. Every Update locks it FOR UPDATE first, which serializes
//     the keyspace's writers across all replicas, and bumps its version
//     when it commits;
//   - castellan_buckets(keyspace, name): the buckets, never deleted;
//   - castellan_kv(keyspace, bucket, key, value): the entries, ordered by
//     key (bytea compares as bytes.Compare does).
//
// An Update runs at READ COMMITTED after taking the coordinator lock, so
// each of its statements sees every commit before it; its Puts and
// Deletes are buffered in memory (reads see them) and written, with the
// version bump, a NOTIFY and the COMMIT, in one round trip. A View is one
// REPEATABLE READ READ ONLY snapshot. Changed fires on LISTEN/NOTIFY and,
// should a notification be lost, on a periodic poll of the versions.
//
// Keys are limited to pgtx.MaxKeySize bytes and bucket names to
// pgtx.MaxBucketNameSize (PostgreSQL's B-tree entry limit); bbolt allows
// more. The schema and its migrations are package pgschema; a
// transaction's reads, overlay of pending writes and cursors are package
// pgtx.
package pgstore

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/castellan-dev/castellan/ca/store"
	"github.com/castellan-dev/castellan/ca/store/pgstore/pgschema"
)

// DefaultResyncInterval is how often a Conn polls the keyspace versions
// for commits whose notification it missed.
const DefaultResyncInterval = 5 * time.Second

// DefaultMaxConns sizes the pool unless the DSN sets pool_max_conns. A
// process runs at most one Update per keyspace at a time; the rest serve
// Views.
const DefaultMaxConns = 16

// Options tune a Conn. The zero value is usable.
type Options struct {
	// Logger receives listener reconnects and resync failures (nil:
	// discard).
	Logger *slog.Logger
	// Registry, when set, receives castellan_store_transactions_total,
	// castellan_store_update_duration_seconds and
	// castellan_store_listener_reconnects_total.
	Registry prometheus.Registerer
	// ResyncInterval is how often the keyspace versions are polled in case
	// a notification was lost (0: DefaultResyncInterval).
	ResyncInterval time.Duration
	// IdleInTransactionTimeout is how long PostgreSQL keeps a session that
	// went quiet inside a transaction (0: DefaultIdleInTransactionTimeout)
	// before ending it: a replica frozen or cut off inside an Update
	// would otherwise hold its keyspace's lock, stopping every replica's
	// writes, until the server noticed the dead connection. The DSN's
	// idle_in_transaction_session_timeout, if set, wins.
	IdleInTransactionTimeout time.Duration
}

// DefaultIdleInTransactionTimeout bounds how long a vanished replica can
// hold a keyspace's lock.
const DefaultIdleInTransactionTimeout = 30 * time.Second

// Conn is a process's connection to the shared store: a pool, one
// LISTEN connection and the resync poll, serving every keyspace DB.
type Conn struct {
	pool     *pgxpool.Pool
	log      *slog.Logger
	m        *metrics
	target   string // user@host:port/db, for messages (no password)
	password string // redacted from every error
	resync   time.Duration
	kick     chan struct{} // asks the poller for an immediate resync

	mu        sync.Mutex
	keyspaces map[string]*keyspace
	closed    bool

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// Connect connects to the PostgreSQL database at dsn (a postgres:// URL or
// key=value string), applies the schema migrations it lacks, and starts
// listening for other replicas' commits. It fails if the database cannot
// be reached or its schema is newer than this binary knows.
func Connect(ctx context.Context, dsn string, opts Options) (*Conn, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("pgstore: datastore DSN: %w", redactDSN(err, dsn))
	}
	c := &Conn{
		log:       cmp.Or(opts.Logger, slog.New(slog.DiscardHandler)),
		target:    target(cfg),
		password:  cfg.ConnConfig.Password,
		resync:    cmp.Or(opts.ResyncInterval, DefaultResyncInterval),
		kick:      make(chan struct{}, 1),
		keyspaces: map[string]*keyspace{},
	}
	if c.m, err = newMetrics(opts.Registry); err != nil {
		return nil, err
	}
	if _, ok := cfg.ConnConfig.RuntimeParams["application_name"]; !ok {
		cfg.ConnConfig.RuntimeParams["application_name"] = "castellan"
	}
	if _, ok := cfg.ConnConfig.RuntimeParams["idle_in_transaction_session_timeout"]; !ok {
		idle := cmp.Or(opts.IdleInTransactionTimeout, DefaultIdleInTransactionTimeout)
		cfg.ConnConfig.RuntimeParams["idle_in_transaction_session_timeout"] = strconv.FormatInt(idle.Milliseconds(), 10)
	}
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = 10 * time.Second
	}
	if !strings.Contains(dsn, "pool_max_conns") {
		cfg.MaxConns = DefaultMaxConns
	}
	if c.pool, err = pgxpool.NewWithConfig(ctx, cfg); err != nil {
		return nil, c.errorf("connect", err)
	}
	if err := c.pool.Ping(ctx); err != nil {
		c.pool.Close()
		return nil, c.connectError(err)
	}
	if err := c.start(ctx, cfg); err != nil {
		c.pool.Close()
		return nil, err
	}
	return c, nil
}

// start migrates the schema and starts the listener and the poller.
func (c *Conn) start(ctx context.Context, cfg *pgxpool.Config) error {
	if err := c.migrate(ctx); err != nil {
		return err
	}
	lcfg := cfg.ConnConfig.Copy()
	lcfg.RuntimeParams["application_name"] = listenerName
	l, err := c.listenConn(ctx, lcfg)
	if err != nil {
		return c.errorf("listen", err)
	}
	bg, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	c.wg.Add(2)
	go func() { defer c.wg.Done(); c.listen(bg, lcfg, l) }()
	go func() { defer c.wg.Done(); c.poll(bg) }()
	return nil
}

// migrate brings the schema up to date (package pgschema), naming the
// database in its errors: a schema newer than this binary and a refused
// step are configuration errors, the rest an outage.
func (c *Conn) migrate(ctx context.Context) error {
	err := pgschema.Migrate(ctx, c.pool, func(version int) {
		c.log.Info("pgstore: applied schema migration", "version", version, "database", c.target)
	})
	var step *pgschema.StepError
	switch {
	case err == nil:
		return nil
	case errors.Is(err, pgschema.ErrTooNew):
		return fmt.Errorf("pgstore: database %s: %w", c.target, err)
	case errors.As(err, &step):
		return fmt.Errorf("pgstore: schema migration %d (%s): %w", step.Version, c.target, c.redact(step.Err))
	}
	return c.errorf("schema migration", err)
}

func target(cfg *pgxpool.Config) string {
	cc := cfg.ConnConfig
	return fmt.Sprintf("%s@%s:%d/%s", cc.User, cc.Host, cc.Port, cc.Database)
}

// Keyspace returns the DB of keyspace name (created if new): a short
// identifier such as "ledger" or "registry". Keyspaces are independent.
func (c *Conn) Keyspace(ctx context.Context, name string) (*DB, error) {
	if err := validKeyspace(name); err != nil {
		return nil, err
	}
	if c.isClosed() {
		return nil, store.ErrClosed
	}
	if _, err := c.pool.Exec(ctx, sqlCreateKeyspace, name); err != nil {
		return nil, c.errorf("keyspace "+name, err)
	}
	var version int64
	if err := c.pool.QueryRow(ctx, sqlVersion, name).Scan(&version); err != nil {
		return nil, c.errorf("keyspace "+name, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, store.ErrClosed
	}
	ks := c.keyspaces[name]
	if ks == nil {
		ks = newKeyspace(name, version)
		c.keyspaces[name] = ks
	}
	ks.refs++
	return &DB{c: c, ks: ks}, nil
}

func validKeyspace(name string) error {
	if name == "" || len(name) > 63 {
		return fmt.Errorf("pgstore: keyspace name %q: must be 1 to 63 characters", name)
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
			return fmt.Errorf("pgstore: keyspace name %q: use only a-z, 0-9, _ and -", name)
		}
	}
	return nil
}

// release drops a DB's reference to its keyspace.
func (c *Conn) release(ks *keyspace) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ks.refs--; ks.refs == 0 && c.keyspaces[ks.name] == ks {
		delete(c.keyspaces, ks.name)
	}
}

// Close stops the listener and the poller and closes the pool, after the
// transactions running finish. DBs of the Conn then fail with
// store.ErrClosed.
func (c *Conn) Close() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	c.mu.Unlock()
	c.cancel()
	c.wg.Wait()
	c.pool.Close()
}

func (c *Conn) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// errorf wraps a database error as store.ErrUnavailable, naming the
// database and never the password.
func (c *Conn) errorf(what string, err error) error {
	return fmt.Errorf("pgstore: %s (%s): %w: %w", what, c.target, store.ErrUnavailable, c.redact(err))
}

// connectError reports a failed first connection: refused credentials
// are a configuration error, not an outage.
func (c *Conn) connectError(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && strings.HasPrefix(pgErr.Code, "28") { // invalid authorization
		return fmt.Errorf("pgstore: connect (%s): the database refused the credentials of the datastore DSN: %w", c.target, c.redact(err))
	}
	return c.errorf("connect", err)
}

// redact hides the password in err's message; errors.Is and errors.As
// still see through it.
func (c *Conn) redact(err error) error {
	if c.password == "" || err == nil || !strings.Contains(err.Error(), c.password) {
		return err
	}
	return &redacted{msg: strings.ReplaceAll(err.Error(), c.password, "xxxxx"), err: err}
}

func redactDSN(err error, dsn string) error {
	msg := err.Error()
	if i := strings.Index(dsn, "://"); i >= 0 {
		if at := strings.LastIndex(dsn, "@"); at > i {
			if colon := strings.Index(dsn[i+3:at], ":"); colon >= 0 {
				if pw := dsn[i+3+colon+1 : at]; pw != "" {
					msg = strings.ReplaceAll(msg, pw, "xxxxx")
				}
			}
		}
	}
	for _, f := range strings.Fields(dsn) {
		if v, ok := strings.CutPrefix(f, "password="); ok && v != "" {
			msg = strings.ReplaceAll(msg, v, "xxxxx")
		}
	}
	return &redacted{msg: msg, err: err}
}

type redacted struct {
	msg string
	err error
}

func (r *redacted) Error() string { return r.msg }
func (r *redacted) Unwrap() error { return r.err }

var errKeyspaceGone = errors.New("keyspace row missing (was the schema altered by hand?)")
