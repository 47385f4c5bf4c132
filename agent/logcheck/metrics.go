package logcheck

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are a Checker's metrics; registered only with a Registry.
type metrics struct {
	size       prometheus.Gauge
	proofs     *prometheus.CounterVec
	refused    prometheus.Counter
	forks      prometheus.Counter
	unverified prometheus.Counter
}

func newMetrics(reg *prometheus.Registry) (*metrics, error) {
	m := &metrics{
		size: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "castellan_agent_log_accepted_size",
			Help: "Tree size of the witnessed issuance-log checkpoint this agent last accepted.",
		}),
		proofs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "castellan_agent_log_proofs_total",
			Help: "Certificates checked against the witnessed issuance log, by result (proven, timeout, refused).",
		}, []string{"result"}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "castellan_agent_log_checkpoints_refused_total",
			Help: "Checkpoints from the CA refused: not signed by the pinned log key or not cosigned by the witness policy.",
		}),
		forks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "castellan_agent_log_forks_total",
			Help: "Witnessed checkpoints that contradict the accepted one (a forked or rewritten log). Alert on any.",
		}),
		unverified: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "castellan_agent_log_unverified_total",
			Help: "Certificates served under --log-policy monitor that could not be proven in the witnessed log. Alert on any.",
		}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.size, m.proofs, m.refused, m.forks, m.unverified} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("logcheck: metrics: %w", err)
		}
	}
	return m, nil
}
