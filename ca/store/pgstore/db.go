package pgstore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/castellan-dev/castellan/ca/store"
	"github.com/castellan-dev/castellan/ca/store/pgstore/pgtx"
)

// DB is one keyspace of the shared store; it implements store.DB.
type DB struct {
	c  *Conn
	ks *keyspace

	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup // running transactions
}

var _ store.DB = (*DB)(nil)

// enter registers a transaction, refused once the DB or its Conn closed.
func (d *DB) enter() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed || d.c.isClosed() {
		return fmt.Errorf("pgstore: keyspace %s: %w", d.ks.name, store.ErrClosed)
	}
	d.wg.Add(1)
	return nil
}

// View implements store.DB: fn runs on one REPEATABLE READ snapshot.
func (d *DB) View(ctx context.Context, fn func(store.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := d.enter(); err != nil {
		return err
	}
	defer d.wg.Done()
	err := d.run(ctx, false, fn)
	d.c.m.transaction(d.ks.name, "view", err)
	return err
}

// Update implements store.DB: fn runs holding the keyspace's coordinator
// row lock; its writes are flushed and committed in one round trip.
func (d *DB) Update(ctx context.Context, fn func(store.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := d.enter(); err != nil {
		return err
	}
	defer d.wg.Done()
	start := time.Now()
	err := d.run(ctx, true, fn)
	d.c.m.transaction(d.ks.name, "update", err)
	d.c.m.updateSeconds.WithLabelValues(d.ks.name).Observe(time.Since(start).Seconds())
	return err
}

// run runs one transaction on a pooled connection.
func (d *DB) run(ctx context.Context, writable bool, fn func(store.Tx) error) error {
	if writable {
		select {
		case d.ks.writer <- struct{}{}:
			defer func() { <-d.ks.writer }()
		case <-ctx.Done():
			return d.unavailable(fmt.Errorf("waiting for this process's previous Update: %w", ctx.Err()))
		}
	}
	pc, err := d.c.pool.Acquire(ctx)
	if err != nil {
		return d.unavailable(err)
	}
	// Release destroys a connection left inside a transaction (a panic
	// in fn, a failed rollback).
	defer pc.Release()
	conn := pc.Conn()
	version, err := d.begin(ctx, conn, writable)
	if err != nil {
		return err
	}
	tx := pgtx.New(ctx, conn, d.ks.name, &d.ks.buckets, version, writable)
	ferr := fn(tx)
	tx.End()
	if tx.Err() != nil || ferr != nil || !writable || tx.Empty() {
		rollback(ctx, conn)
		if tx.Err() != nil {
			return d.unavailable(tx.Err())
		}
		if ferr == nil && writable {
			d.ks.fire()
		}
		return ferr
	}
	if atCommit, err := d.commit(ctx, conn, tx, version+1); err != nil {
		return d.commitError(err, atCommit)
	}
	tx.Committed(version + 1)
	d.ks.advance(version + 1)
	return nil
}

// commit writes the Update's overlay, bumps the keyspace to version,
// notifies the other replicas and commits: one round trip. atCommit tells
// whether err is the answer to the COMMIT itself.
func (d *DB) commit(ctx context.Context, conn *pgx.Conn, tx *pgtx.Tx, version int64) (atCommit bool, err error) {
	b := &pgx.Batch{}
	tx.Queue(b)
	b.Queue(sqlBump, d.ks.name, version)
	b.Queue(sqlNotify, fmt.Sprintf("%s:%d", d.ks.name, version))
	b.Queue("COMMIT")
	br := conn.SendBatch(ctx, b)
	defer br.Close()
	for i := range b.Len() {
		if _, err := br.Exec(); err != nil {
			return i == b.Len()-1, err
		}
	}
	return true, br.Close()
}

// begin opens the transaction and reads the keyspace's version (locking
// its row in an Update), in one round trip.
func (d *DB) begin(ctx context.Context, conn *pgx.Conn, writable bool) (int64, error) {
	b := &pgx.Batch{}
	if writable {
		b.Queue(sqlBeginUpdate)
		b.Queue(sqlLock, d.ks.name)
	} else {
		b.Queue(sqlBeginView)
		b.Queue(sqlVersion, d.ks.name)
	}
	br := conn.SendBatch(ctx, b)
	var version int64
	_, err := br.Exec()
	if err == nil {
		err = br.QueryRow().Scan(&version)
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if errors.Is(err, pgx.ErrNoRows) {
		err = errKeyspaceGone
	}
	if err != nil {
		rollback(ctx, conn)
		return 0, d.unavailable(err)
	}
	return version, nil
}

// rollback ends the connection's transaction, if any, bounded in time
// even when ctx is done.
func rollback(ctx context.Context, conn *pgx.Conn) {
	if conn.IsClosed() || conn.PgConn().TxStatus() == 'I' {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	conn.Exec(ctx, "ROLLBACK")
}

func (d *DB) unavailable(err error) error {
	return d.c.errorf("keyspace "+d.ks.name, err)
}

// commitError classifies a failed flush-and-commit. Nothing was
// committed when the server refused a statement before the COMMIT (the
// transaction aborted and the COMMIT was skipped), refused the COMMIT
// itself with an ERROR, or when nothing was sent. Otherwise the outcome is
// unknown: the connection was lost after sending, or the session ended
// (FATAL) while committing, possibly after the commit was durable.
func (d *DB) commitError(err error, atCommit bool) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && (!atCommit || pgErr.Severity == "ERROR") || pgconn.SafeToRetry(err) {
		return d.unavailable(err)
	}
	return fmt.Errorf("pgstore: keyspace %s commit (%s): %w: %w", d.ks.name, d.c.target, store.ErrCommitUnknown, d.c.redact(err))
}

// Changed implements store.DB: closed after the next commit of the
// keyspace by this process (on return from Update) or by another replica
// (on its notification, or at the latest at the next resync poll).
func (d *DB) Changed() <-chan struct{} { return d.ks.Changed() }

// Ping implements store.DB: the database answers.
func (d *DB) Ping(ctx context.Context) error {
	if err := d.enter(); err != nil {
		return err
	}
	defer d.wg.Done()
	if err := d.c.pool.Ping(ctx); err != nil {
		return d.unavailable(err)
	}
	return nil
}

// Shared implements store.DB: other replicas write the keyspace too.
func (d *DB) Shared() bool { return true }

// Close implements store.DB: it waits for the running transactions. The
// Conn stays open.
func (d *DB) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	d.mu.Unlock()
	d.wg.Wait()
	d.c.release(d.ks)
	return nil
}
