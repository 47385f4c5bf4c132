package ledger

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the ledger's Prometheus metrics; a nil *metrics records nothing.
type metrics struct {
	events *prometheus.CounterVec
	size   prometheus.GaugeFunc
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
	}
	reg.MustRegister(m.events, m.size)
	return m
}

func (m *metrics) appended(evs []Event) {
	if m == nil {
		return
	}
	for i := range evs {
		m.events.WithLabelValues(string(evs[i].Kind)).Inc()
	}
}
