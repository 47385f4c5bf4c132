package ledger

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/ca/ledger/index"
)

// processCPU returns the CPU time (user + system) this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// serverEvent is an issuance event shaped as the CA's batch issuance
// makes them: a random 128-bit serial, a workload SPIFFE ID, and the node
// of the agent whose batch it is.
func serverEvent(rng *rand.Rand, node string) entry.Event {
	return entry.Event{
		Kind: entry.KindIssuance, Serial: fmt.Sprintf("%016x%016x", rng.Uint64(), rng.Uint64()),
		SPIFFEID: fmt.Sprintf("spiffe://cluster.local/ns/ns%d/sa/sa%d", rng.IntN(100), rng.IntN(100)),
		Node:     node, NotBefore: time.Unix(1_700_000_000, 0), NotAfter: time.Unix(1_700_003_600, 0),
		PublicKeySHA256: fmt.Sprintf("%016x%048x", rng.Uint64(), 0), CertDER: benchCert,
	}
}

// BenchmarkAppendCPU measures the CPU the ledger spends per event on the
// batch issuance path: appends of 100 issuance events from one caller
// (encoding, Merkle tree, index entries, commit, indexing), with the JSON
// audit log line of each event written as the server writes it (to
// io.Discard here) or with audit logging off; and, audit off, events
// shaped as the server's (events=server: random serials, which land all
// over the serial index, and one node per batch of 100). It reports
// cpu-µs/event (this process, user and system: bbolt's page writes and
// fsync cost system CPU), events/s and the pages bbolt writes per Append
// (bbolt TxStats.Write, one pwrite each), the indexer's transactions
// included: the timer stops once the indexer has indexed every event.
func BenchmarkAppendCPU(b *testing.B) {
	discard := slog.New(slog.DiscardHandler)
	for _, c := range []struct {
		name   string
		log    *slog.Logger
		server bool
	}{
		{"audit=json", slog.New(slog.NewJSONHandler(io.Discard, nil)), false},
		{"audit=off", discard, false},
		{"audit=off/events=server", discard, true},
	} {
		b.Run(c.name, func(b *testing.B) {
			l, err := Open(filepath.Join(b.TempDir(), "l.db"), Config{Logger: c.log})
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			const batch = 100
			evs := make([]entry.Event, batch)
			n, rng := uint64(0), rand.New(rand.NewPCG(1, 2))
			b.ResetTimer()
			cpu0, tx0 := processCPU(), l.bolt.Stats().TxStats
			for k := range b.N {
				node := fmt.Sprintf("node-%d", k%500)
				for i := range evs {
					n++
					if c.server {
						evs[i] = serverEvent(rng, node)
					} else {
						evs[i] = benchEvent(n)
					}
				}
				if _, err := l.Append(context.Background(), evs...); err != nil {
					b.Fatal(err)
				}
			}
			if err := index.Wait(l.Index, context.Background()); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			b.ReportMetric(float64((processCPU()-cpu0).Microseconds())/float64(b.N*batch), "cpu-µs/event")
			tx1 := l.bolt.Stats().TxStats
			b.ReportMetric(float64(tx1.GetWrite()-tx0.GetWrite())/float64(b.N), "pages/append")
			b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "events/s")
		})
	}
}
