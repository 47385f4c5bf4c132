package caconn

import (
	"fmt"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics counts how the client spreads over the CA's endpoints.
type metrics struct {
	failovers         *prometheus.CounterVec
	retries           *prometheus.CounterVec
	handshakeFailures prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		failovers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "castellan_agent_ca_failovers_total",
			Help: "CA calls served by another endpoint after one failed them, and SyncAgent streams reopened on another endpoint, by call.",
		}, []string{"call"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "castellan_agent_ca_retries_total",
			Help: "Failed attempts of CA calls that the agent retried, by call and gRPC code.",
		}, []string{"call", "code"}),
		handshakeFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "castellan_agent_ca_handshake_failures_total",
			Help: "TLS handshakes with a CA endpoint that failed, such as an endpoint whose certificate is not the CA's; such an endpoint is not used.",
		}),
	}
	for _, call := range []string{"BatchSignX509SVID", "RenewAgent", "AttestAgent", "SyncAgent"} {
		m.failovers.WithLabelValues(call)
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.failovers, m.retries, m.handshakeFailures} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("client: register metrics: %w", err)
			}
		}
	}
	return m, nil
}

// streamEndpoint remembers which endpoint served the last SyncAgent
// stream, so that a stream reopened elsewhere counts as a failover.
type streamEndpoint struct {
	mu   sync.Mutex
	last string
}

// moved records endpoint as the current one and returns the previous
// one if it was another.
func (s *streamEndpoint) moved(endpoint string) (from string, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	from, s.last = s.last, endpoint
	return from, from != "" && from != endpoint
}
