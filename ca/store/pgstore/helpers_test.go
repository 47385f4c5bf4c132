package pgstore

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/castellan-dev/castellan/ca/store"
	"github.com/castellan-dev/castellan/internal/pgtest"
)

// shared is the server most tests make their own database on; tests that
// stop or kill PostgreSQL start their own.
var shared *pgtest.Server

func TestMain(m *testing.M) {
	s, err := pgtest.New("")
	if err != nil {
		fmt.Fprintln(os.Stderr, "pgstore tests:", err)
		os.Exit(1)
	}
	shared = s
	code := m.Run()
	if err := s.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "pgstore tests:", err)
		code = 1
	}
	os.Exit(code)
}

func ctxT(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// connect opens a Conn ("a replica") on dsn, closed at cleanup.
func connect(t testing.TB, dsn string, opts Options) *Conn {
	t.Helper()
	c, err := Connect(ctxT(t, 30*time.Second), dsn, opts)
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

func keyspaceDB(t testing.TB, c *Conn, name string) *DB {
	t.Helper()
	db, err := c.Keyspace(ctxT(t, 10*time.Second), name)
	if err != nil {
		t.Fatalf("Keyspace(%s): %v", name, err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// newDB is a keyspace on a fresh database of the shared server.
func newDB(t testing.TB) (*DB, string) {
	t.Helper()
	dsn := shared.NewDatabase(t)
	return keyspaceDB(t, connect(t, dsn, Options{}), "ledger"), dsn
}

func put(t testing.TB, db store.DB, bucket, key, value string) {
	t.Helper()
	err := db.Update(ctxT(t, 10*time.Second), func(tx store.Tx) error {
		b, err := tx.CreateBucketIfNotExists([]byte(bucket))
		if err != nil {
			return err
		}
		return b.Put([]byte(key), []byte(value))
	})
	if err != nil {
		t.Fatalf("put %s/%s: %v", bucket, key, err)
	}
}

// get reads a key; "" with ok false when it or its bucket is absent.
func get(t testing.TB, db store.DB, bucket, key string) (string, bool) {
	t.Helper()
	var v []byte
	err := db.View(ctxT(t, 10*time.Second), func(tx store.Tx) error {
		if b := tx.Bucket([]byte(bucket)); b != nil {
			v = bytes.Clone(b.Get([]byte(key)))
		}
		return nil
	})
	if err != nil {
		t.Fatalf("get %s/%s: %v", bucket, key, err)
	}
	return string(v), v != nil
}

// waitClosed fails t unless ch is closed within d.
func waitClosed(t testing.TB, ch <-chan struct{}, d time.Duration, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(d):
		t.Fatalf("%s: Changed did not fire within %s", what, d)
	}
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// logBuffer is a slog handler's output, safe for concurrent use.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func dsnDatabase(t testing.TB, dsn string) string {
	t.Helper()
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	return cfg.Database
}

func counterValue(c prometheus.Collector) float64 { return testutil.ToFloat64(c) }

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}
