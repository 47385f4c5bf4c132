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
// (this process; bbolt's fsync is time, not CPU) and events/s.
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
			cpu0 := processCPU()
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
			b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "events/s")
		})
	}
}
