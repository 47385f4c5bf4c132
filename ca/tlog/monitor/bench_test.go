package monitor_test

import (
	"testing"
	"time"

	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/ca/tlog/monitor"
)

// BenchmarkMonitorFirstPass measures a first pass over a log of 20,000
// issuances with real certificates, served by the real handler over
// loopback HTTP: every bundle and tile fetched, every entry hashed,
// decoded and its certificate parsed and compared, every chunk proven in
// the signed tree. It reports entries verified per second.
func BenchmarkMonitorFirstPass(b *testing.B) {
	const n = 20000
	r := newRig(b)
	evs := make([]entry.Event, 0, 1000)
	for i := 0; i < n; i++ {
		evs = append(evs, r.cert(entry.KindIssuance, payments, "node-a"))
		if len(evs) == cap(evs) {
			r.appendTo(r.log, evs...)
			evs = evs[:0]
		}
	}
	m := r.monitor(monitor.Filter{Nodes: []string{"nobody"}})
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		res, err := runOnce(b, m, statePath(b))
		if err != nil || res.To != n {
			b.Fatalf("pass: %v", err)
		}
	}
	b.ReportMetric(float64(n*b.N)/time.Since(start).Seconds(), "entries/s")
}
