package journal

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the authority journal's Prometheus metrics.
type Metrics struct {
	state        *prometheus.GaugeVec   // 1 for an authority's current state, 0 for the others
	notAfter     *prometheus.GaugeVec   // NotAfter of each trusted authority
	leavesUntil  *prometheus.GaugeVec   // bound of the last leaf of each old/tainted authority
	activeExpiry prometheus.Gauge       // NotAfter of the active authority (for alerts)
	rotations    prometheus.Counter     // activations
	transitions  *prometheus.CounterVec // transitions by target state
	Refusals     *prometheus.CounterVec // refused automatic steps and files, by reason
	ReloadErrors prometheus.Counter
}

var allStates = []State{StatePrepared, StateActive, StateOld, StateTainted, StateRevoked}

func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		state: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "castellan_ca_authority_state",
			Help: "1 for the state each CA authority is in (prepared, active, old, tainted, revoked), 0 for the others.",
		}, []string{"authority", "state"}),
		notAfter: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "castellan_ca_authority_not_after_seconds",
			Help: "NotAfter (Unix seconds) of each trusted CA authority's signing certificate.",
		}, []string{"authority"}),
		leavesUntil: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "castellan_ca_authority_leaves_expire_by_seconds",
			Help: "Bound (Unix seconds) on the expiry of the last leaf under each old or tainted CA authority.",
		}, []string{"authority"}),
		activeExpiry: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "castellan_ca_active_authority_not_after_seconds",
			Help: "NotAfter (Unix seconds) of the signing authority; alert when it nears time().",
		}),
		rotations: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "castellan_ca_authority_rotations_total",
			Help: "Activations of a new signing authority made by this replica.",
		}),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "castellan_ca_authority_transitions_total",
			Help: "Authority state transitions made by this replica, by target state.",
		}, []string{"to"}),
		Refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "castellan_ca_authority_refusals_total",
			Help: "Refused authority changes (plug-in files, activations), by reason.",
		}, []string{"reason"}),
		ReloadErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "castellan_ca_authority_reload_errors_total",
			Help: "Failures to read or apply the authority journal.",
		}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.state, m.notAfter, m.leavesUntil, m.activeExpiry,
		m.rotations, m.transitions, m.Refusals, m.ReloadErrors} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// Observe sets the gauges from the journal.
func (m *Metrics) Observe(recs []*Record, maxTTL time.Duration) {
	for _, r := range recs {
		for _, s := range allStates {
			v := 0.0
			if r.State == s {
				v = 1
			}
			m.state.WithLabelValues(r.ID, string(s)).Set(v)
		}
		if r.State.Trusted() {
			m.notAfter.WithLabelValues(r.ID).Set(float64(r.Certs[0].NotAfter.Unix()))
		} else {
			m.notAfter.DeleteLabelValues(r.ID)
		}
		if r.State == StateOld || r.State == StateTainted {
			m.leavesUntil.WithLabelValues(r.ID).Set(float64(LeavesExpireBy(r, maxTTL).Unix()))
		} else {
			m.leavesUntil.DeleteLabelValues(r.ID)
		}
		if r.State == StateActive {
			m.activeExpiry.Set(float64(r.Certs[0].NotAfter.Unix()))
		}
	}
}

// Count counts committed transitions.
func (m *Metrics) Count(changes []Transition) {
	for _, c := range changes {
		m.transitions.WithLabelValues(string(c.To)).Inc()
		if c.To == StateActive && (c.From == StatePrepared || c.From == StateOld) {
			m.rotations.Inc()
		}
	}
}
