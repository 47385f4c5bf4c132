package ledger

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the ledger's Prometheus metrics; a nil *metrics records nothing.
type metrics struct {
	events *prometheus.CounterVec
	size   prometheus.GaugeFunc
}

// reserveCollectors are the disk reserve's gauges.
func reserveCollectors(l *Ledger) []prometheus.Collector {
	return []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "castellan_ledger_disk_reserve_breached",
			Help: "1 while the ledger's filesystem has less free space than --ledger-disk-reserve and appends (issuance) are refused; alert on it.",
		}, func() float64 {
			if b, _ := l.reserve.state(); b {
				return 1
			}
			return 0
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "castellan_ledger_disk_free_bytes",
			Help: "Free bytes on the ledger's filesystem, as last measured by the disk reserve check (0 without a reserve).",
		}, func() float64 { _, f := l.reserve.state(); return float64(f) }),
	}
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
	reg.MustRegister(reserveCollectors(l)...)
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
