package ledger

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/ca/store"
	"github.com/castellan-dev/castellan/ca/store/pgstore"
	"github.com/castellan-dev/castellan/internal/clock/clocktest"
	"github.com/castellan-dev/castellan/internal/pgtest"
)

// postgres is the PostgreSQL server of the package's tests, started on
// first use (pgtest: the machine's binaries, a temporary directory, a
// loopback port) and stopped by TestMain; each test gets a fresh database.
var postgres struct {
	once   sync.Once
	server *pgtest.Server
	err    error
}

// postgresServer returns the package's server, starting it if needed.
func postgresServer(t testing.TB) *pgtest.Server {
	t.Helper()
	postgres.once.Do(func() { postgres.server, postgres.err = pgtest.New("") })
	if postgres.err != nil {
		t.Fatalf("postgres for the ledger tests: %v", postgres.err)
	}
	return postgres.server
}

// stopPostgres stops the package's server if it was started (TestMain).
func stopPostgres() error {
	if postgres.server == nil {
		return nil
	}
	return postgres.server.Close()
}

// pgStores returns n handles on the "ledger" keyspace of a fresh
// database, each through its own Conn: n replicas.
func pgStores(t testing.TB, n int) []store.DB {
	t.Helper()
	dsn := postgresServer(t).NewDatabase(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out := make([]store.DB, n)
	for i := range out {
		conn, err := pgstore.Connect(ctx, dsn, pgstore.Options{})
		if err != nil {
			t.Fatalf("pgstore.Connect: %v", err)
		}
		t.Cleanup(conn.Close)
		db, err := conn.Keyspace(ctx, "ledger")
		if err != nil {
			t.Fatalf("pgstore keyspace: %v", err)
		}
		t.Cleanup(func() { db.Close() })
		out[i] = db
	}
	return out
}

// TestPostgresLostStopsAppendsThenRecovers: with PostgreSQL stopped, both
// replicas fail Append with Unavailable (nothing logged, no index handed
// out) and fail Ping; once it is back, both append again through the
// same connections, into one log with no gap, and see each other's
// revocations again.
func TestPostgresLostStopsAppendsThenRecovers(t *testing.T) {
	srv := pgtest.Start(t)
	dsn := srv.NewDatabase(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	clock := newFakeClock()
	opts := withKeyFile(t, t.TempDir(), Config{Clock: clocktest.Func(clock.Now)})
	var ls []*Ledger
	for range 2 {
		conn, err := pgstore.Connect(ctx, dsn, pgstore.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(conn.Close)
		db, err := conn.Keyspace(ctx, "ledger")
		if err != nil {
			t.Fatal(err)
		}
		l, err := New(db, opts)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close(); db.Close() })
		ls = append(ls, l)
	}
	exp := clock.Now().Add(time.Hour)
	fillFrom(t, ls[0], 0, 3, exp)
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	for i, l := range ls {
		actx, acancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := l.Append(actx, certEvent(100+i, "spiffe://td/x", "n", exp))
		acancel()
		if got := status.Code(Status("server", err)); got != codes.Unavailable || !errors.Is(err, store.ErrUnavailable) {
			t.Fatalf("replica %d: Append with PostgreSQL stopped: %v (code %v), want Unavailable", i, err, got)
		}
		if err := l.Ping(ctx); err == nil {
			t.Fatalf("replica %d: Ping succeeds with PostgreSQL stopped", i)
		}
	}
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	idx := retryAppend(t, ls[1], certEvent(200, "spiffe://td/x", "n", exp))
	if idx != 3 {
		t.Fatalf("first append after the restart got index %d, want 3 (no gap, nothing of the refused appends logged)", idx)
	}
	revCh := ls[0].RevocationsChanged()
	if _, err := ls[1].Revoke(ctx, certEvent(0, "", "", exp).Serial, "keyCompromise"); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, revCh, 5*time.Second, "a revocation after the restart")
	if got := retryAppend(t, ls[0], certEvent(201, "spiffe://td/x", "n", exp)); got != 5 {
		t.Fatalf("append through the other replica got index %d, want 5", got)
	}
}

// retryAppend appends ev, retrying while the store is unavailable (the
// pool reconnecting after a restart), for at most 30 s.
func retryAppend(t *testing.T, l *Ledger, ev entry.Event) uint64 {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		idx, err := l.Append(ctx, ev)
		cancel()
		if err == nil {
			return idx[0]
		}
		if !errors.Is(err, store.ErrUnavailable) || time.Now().After(deadline) {
			t.Fatalf("append after the restart: %v", err)
		}
		time.Sleep(50 * time.Millisecond) // the pool reconnects
	}
}

// BenchmarkAppendPostgres measures durable appends on PostgreSQL (the
// package's server, fsync on, on this machine) from concurrent callers
// spread over one or two replicas, each with its own Conn.
func BenchmarkAppendPostgres(b *testing.B) {
	for _, c := range []struct{ replicas, batch, callers int }{{1, 1, 32}, {2, 1, 32}, {1, 100, 32}, {2, 100, 32}} {
		b.Run(fmt.Sprintf("replicas=%d/batch=%d/callers=%d", c.replicas, c.batch, c.callers), func(b *testing.B) {
			ls := backend{name: "postgres", stores: pgStores}.replicas(b, c.replicas, Config{})
			var next atomic.Uint64
			lat := runCallers(b, c.callers, func() error {
				n := next.Add(1)
				evs := make([]entry.Event, c.batch)
				for i := range evs {
					evs[i] = benchEvent(n*uint64(c.batch) + uint64(i))
				}
				_, err := ls[n%uint64(len(ls))].Append(context.Background(), evs...)
				return err
			})
			b.ReportMetric(float64(b.N*c.batch)/b.Elapsed().Seconds(), "events/s")
			reportLatency(b, lat)
		})
	}
}

// BenchmarkRevocationSeenByOtherReplica measures, on PostgreSQL, the
// time from a revocation appended through one replica to its being in
// force on another (its RevocationsChanged fired and IsRevoked true): the
// ledger's share of the issue's "revocation reaches an agent on another
// replica" (p50/p99 per revocation).
func BenchmarkRevocationSeenByOtherReplica(b *testing.B) {
	ls := backend{name: "postgres", stores: pgStores}.replicas(b, 2, Config{})
	a, r := ls[0], ls[1]
	ctx := context.Background()
	exp := time.Now().Add(time.Hour)
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		ev := certEvent(i, "spiffe://td/x", "n", exp)
		if _, err := a.Append(ctx, ev); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		start := time.Now()
		ch := a.RevocationsChanged()
		if _, err := r.Append(ctx, entry.Event{Kind: entry.KindRevocation, Serial: ev.Serial, Node: ev.Node, SPIFFEID: ev.SPIFFEID, NotAfter: exp}); err != nil {
			b.Fatal(err)
		}
		for !a.IsRevoked(ev.Serial, time.Now()) {
			select {
			case <-ch:
				ch = a.RevocationsChanged()
			case <-time.After(5 * time.Second):
				b.Fatalf("revocation %d not seen by the other replica within 5 s", i)
			}
		}
		lat = append(lat, time.Since(start))
	}
	slices.Sort(lat)
	reportLatency(b, lat)
}
