package manager

import (
	"fmt"
	"sync"
	"time"

	"github.com/castellan-dev/castellan/internal/clock"
	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	cached    prometheus.Gauge
	rotations *prometheus.CounterVec

	mu      sync.Mutex
	nearest time.Time
}

func newMetrics(reg *prometheus.Registry, clock clock.Clock) (*metrics, error) {
	m := &metrics{
		cached: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "castellan_agent_cached_identities",
			Help: "SVIDs the agent holds and may serve.",
		}),
		rotations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "castellan_agent_rotations_total",
			Help: "SVID issuances and renewals by result (success, failure).",
		}, []string{"result"}),
	}
	nearest := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "castellan_agent_nearest_expiry_seconds",
		Help: "Seconds until the soonest-expiring served SVID expires; 0 when none is served.",
	}, func() float64 {
		m.mu.Lock()
		defer m.mu.Unlock()
		if m.nearest.IsZero() {
			return 0
		}
		return m.nearest.Sub(clock.Now()).Seconds()
	})
	m.rotations.WithLabelValues("success")
	m.rotations.WithLabelValues("failure")
	if reg != nil {
		for _, c := range []prometheus.Collector{m.cached, m.rotations, nearest} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("manager: register metrics: %w", err)
			}
		}
	}
	return m, nil
}

func (m *metrics) setNearest(t time.Time) {
	m.mu.Lock()
	m.nearest = t
	m.mu.Unlock()
}
