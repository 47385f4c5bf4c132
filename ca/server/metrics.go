package server

import (
	"time"

	"github.com/castellan-dev/castellan/ca/refusal"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
)

// Reasons the server adds to those of authority, authn and authz.
const (
	reasonBatchTooLarge = "batch_too_large"
)

// metrics are the server's Prometheus collectors (the edge and the
// admission have their own).
type metrics struct {
	signing  prometheus.Histogram
	caExpiry *prometheus.GaugeVec
}

// newMetrics returns the server's collectors, registered in reg (nil: not
// exported) with the others the server exports (the edge's, the
// admission's).
func newMetrics(reg *prometheus.Registry, others ...prometheus.Collector) (*metrics, error) {
	m := &metrics{
		signing: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "castellan_signing_duration_seconds",
			Help:    "Time to validate and sign one X.509-SVID (CSR parse, signature check, certificate creation).",
			Buckets: prometheus.ExponentialBuckets(25e-6, 2, 14),
		}),
		caExpiry: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "castellan_ca_certificate_expiry_timestamp_seconds",
			Help: "NotAfter of the CA certificates as a Unix timestamp, by certificate (root, intermediate).",
		}, []string{"cert"}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range append([]prometheus.Collector{m.signing, m.caExpiry}, others...) {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *metrics) observeSigning(d time.Duration) { m.signing.Observe(d.Seconds()) }

// refuse returns a refusal by the server itself (size limits, bans,
// renewal limits): a *refusal.Error whose message is prefixed "server: ".
func refuse(code codes.Code, reason, format string, args ...any) *refusal.Error {
	return refusal.Errorf(code, reason, "server: "+format, args...)
}
