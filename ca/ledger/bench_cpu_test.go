package ledger

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/ca/ledger/entry"
)

// processCPU returns the CPU time (user + system) this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkAppendCPU measures the CPU the ledger spends per event on the
// batch issuance path: appends of 100 issuance events from one caller
// (encoding, Merkle tree, index entries, commit, indexing), with the JSON
// audit log line of each event written as the server writes it (to
// io.Discard here) or with audit logging off. It reports cpu-µs/event
// (this process, user and system: bbolt's page writes and fsync cost
// system CPU), events/s and the pages bbolt writes per commit (one commit
// per Append here; bbolt TxStats.Write, one pwrite each).
func BenchmarkAppendCPU(b *testing.B) {
	for _, audit := range []bool{true, false} {
		name := "audit=json"
		log := slog.New(slog.NewJSONHandler(io.Discard, nil))
		if !audit {
			name, log = "audit=off", slog.New(slog.DiscardHandler)
		}
		b.Run(name, func(b *testing.B) {
			l, err := Open(filepath.Join(b.TempDir(), "l.db"), Config{Logger: log})
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			const batch = 100
			evs := make([]entry.Event, batch)
			n := uint64(0)
			b.ResetTimer()
			cpu0, tx0 := processCPU(), l.bolt.Stats().TxStats
			for range b.N {
				for i := range evs {
					n++
					evs[i] = benchEvent(n)
				}
				if _, err := l.Append(context.Background(), evs...); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64((processCPU()-cpu0).Microseconds())/float64(b.N*batch), "cpu-µs/event")
			tx1 := l.bolt.Stats().TxStats
			b.ReportMetric(float64(tx1.GetWrite()-tx0.GetWrite())/float64(b.N), "pages/commit")
			b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "events/s")
		})
	}
}
