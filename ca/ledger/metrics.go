package ledger

import (
	"time"

	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/ca/ledger/index"
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the ledger's Prometheus metrics; a nil *metrics records nothing.
type metrics struct {
	events   *prometheus.CounterVec
	size     prometheus.GaugeFunc
	lag      prometheus.GaugeFunc
	duration prometheus.Histogram
	failures prometheus.Counter
}

func newMetrics(reg *prometheus.Registry, l *Ledger) *metrics {
	if reg == nil {
		return nil
	}
	m := &metrics{
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "castellan_ledger_events_total",
			Help: "Events appended to the issuance ledger, by kind.",
		}, []string{"kind"}),
		size: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "castellan_ledger_size",
			Help: "Number of entries in the issuance ledger's Merkle tree.",
		}, func() float64 { return float64(l.Size()) }),
		lag: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "castellan_ledger_unindexed_entries",
			Help: "Entries appended to the ledger and not yet in its indexes (serial, SPIFFE ID, node, expiry); the indexer catches up within moments, so a value that keeps growing means it is failing (see the log).",
		}, func() float64 { return float64(l.Size() - min(l.Size(), index.Position(l.Index))) }),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "castellan_ledger_append_duration_seconds",
			Help:    "Time of one committed, fsync'd ledger transaction (Append call), including waiting for a shared batch.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "castellan_ledger_append_failures_total",
			Help: "Append calls whose transaction failed; the certificates they recorded were withheld.",
		}),
	}
	reg.MustRegister(m.events, m.size, m.lag, m.duration, m.failures)
	reg.MustRegister(l.reserve.Collectors()...)
	return m
}

func (m *metrics) appended(evs []entry.Event) {
	if m == nil {
		return
	}
	for i := 0; i < len(evs); { // one counter update per run of one kind
		j := i + 1
		for j < len(evs) && evs[j].Kind == evs[i].Kind {
			j++
		}
		m.events.WithLabelValues(string(evs[i].Kind)).Add(float64(j - i))
		i = j
	}
}

// observeAppend records one Append transaction's duration, or its failure.
func (m *metrics) observeAppend(d time.Duration, err error) {
	if m == nil {
		return
	}
	if err != nil {
		m.failures.Inc()
		return
	}
	m.duration.Observe(d.Seconds())
}
