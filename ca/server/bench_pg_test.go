package server

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	cav1 "github.com/castellan-dev/castellan/api/castellan/ca/v1"
	"github.com/castellan-dev/castellan/ca/ledger/logkey"
	"github.com/castellan-dev/castellan/ca/store/faultstore"
	"github.com/castellan-dev/castellan/ca/store/pgstore"
	"github.com/castellan-dev/castellan/internal/pgtest"
)

// BenchmarkBatchIssuancePostgres is BenchmarkBatchIssuanceGRPC with the
// registry and the ledger in PostgreSQL (fsync on, on the same two cores),
// through one replica and through two replicas (two servers, each with its
// own connection pool, sharing one ledger; benchAgents agents spread over
// them). cpu-µs/SVID counts this process and every PostgreSQL process.
func BenchmarkBatchIssuancePostgres(b *testing.B) {
	pg := pgtest.Start(b)
	for _, replicas := range []int{1, 2} {
		b.Run(fmt.Sprintf("replicas=%d", replicas), func(b *testing.B) {
			dsn := pg.NewDatabase(b)
			key := filepath.Join(b.TempDir(), "ledger.key")
			if _, err := logkey.GenerateKeyFile(key, ""); err != nil {
				b.Fatal(err)
			}
			envs := make([]*env, replicas)
			for i := range envs {
				envs[i] = pgEnv(b, dsn, key)
			}
			agents := make([]cav1.CertificateAuthorityServiceClient, benchAgents)
			for i := range agents {
				e := envs[i%replicas]
				node := fmt.Sprintf("node-%d", i)
				e.addEntry(b, appID, node)
				agents[i] = e.agentClient(b, node)
			}
			runBatches(b, agents, indexedCPU(b, func() time.Duration { return cpuTime() + processesCPU(pg.Processes()) }, envs...))
		})
	}
}

// BenchmarkIssuancePostgres is BenchmarkIssuanceGRPC (one P-256 CSR per
// call, 1, 8 and 32 callers) with the registry and the ledger in
// PostgreSQL, one replica; cpu-µs/SVID includes PostgreSQL's processes.
func BenchmarkIssuancePostgres(b *testing.B) {
	pg := pgtest.Start(b)
	for _, callers := range []int{1, 8, 32} {
		b.Run(fmt.Sprintf("p256/callers=%d", callers), func(b *testing.B) {
			dsn := pg.NewDatabase(b)
			key := filepath.Join(b.TempDir(), "ledger.key")
			if _, err := logkey.GenerateKeyFile(key, ""); err != nil {
				b.Fatal(err)
			}
			e := pgEnv(b, dsn, key)
			e.addEntry(b, appID, "node-a")
			runSingles(b, e.agentClient(b, "node-a"), "p256", callers, indexedCPU(b, func() time.Duration { return cpuTime() + processesCPU(pg.Processes()) }, e))
		})
	}
}

// pgEnv is a server whose registry and ledger are keyspaces of the
// database at dsn, reached through its own connection pool.
func pgEnv(b *testing.B, dsn, ledgerKey string) *env {
	ctx := context.Background()
	conn, err := pgstore.Connect(ctx, dsn, pgstore.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(conn.Close)
	reg, err := conn.Keyspace(ctx, "registry")
	if err != nil {
		b.Fatal(err)
	}
	led, err := conn.Keyspace(ctx, "ledger")
	if err != nil {
		b.Fatal(err)
	}
	return newEnvOn(b, faultstore.Wrap(reg, true), led, ledgerKey)
}

// processesCPU sums the user and system CPU of the processes (and of
// their reaped children) from /proc/PID/stat.
func processesCPU(pids []int) time.Duration {
	var ticks int64
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		s := string(b)
		fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		for _, f := range fields[11:15] { // utime, stime, cutime, cstime
			n, _ := strconv.ParseInt(f, 10, 64)
			ticks += n
		}
	}
	return time.Duration(ticks) * time.Second / 100 // USER_HZ
}
