package endpoints

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the endpoints' Prometheus collectors.
type metrics struct {
	sdsStreams     prometheus.Gauge
	wlStreams      prometheus.Gauge
	nacks          prometheus.Counter
	unmatched      *prometheus.CounterVec
	pushLatency    *prometheus.HistogramVec
	attestFailures *prometheus.CounterVec
	refusals       *prometheus.CounterVec
	idleClosed     prometheus.Counter
}

func newMetrics(reg *prometheus.Registry) (*metrics, error) {
	m := &metrics{
		sdsStreams: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "castellan_agent_sds_streams", Help: "Open Envoy SDS streams."}),
		wlStreams: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "castellan_agent_workloadapi_streams", Help: "Open SPIFFE Workload API streams."}),
		nacks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "castellan_agent_sds_nacks_total", Help: "SDS responses rejected (NACKed) by clients."}),
		unmatched: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "castellan_agent_unmatched_callers_total",
			Help: "Calls refused with PermissionDenied because the caller matched no identity."}, []string{"api"}),
		pushLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "castellan_agent_push_latency_seconds",
			Help:    "Time from a state change reaching a stream to the pushed response being sent.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16)}, []string{"api"}),
		attestFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "castellan_agent_attestation_failures_total",
			Help: "Workload attestations that failed, by reason."}, []string{"reason"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "castellan_agent_limit_refusals_total",
			Help: "Connections and calls refused by a limit, by reason: connections_total, connections_per_uid, connections_per_pod, streams_per_uid, streams_per_pod."}, []string{"reason"}),
		idleClosed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "castellan_agent_idle_connections_closed_total",
			Help: "Connections closed for having no open call for the idle timeout."}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.sdsStreams, m.wlStreams, m.nacks, m.unmatched, m.pushLatency, m.attestFailures, m.refusals, m.idleClosed} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("endpoints: register metrics: %w", err)
		}
	}
	return m, nil
}
