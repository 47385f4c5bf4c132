package server

import (
	"context"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"
)

// CSR results (label "result" of castellan_csr_total).
const (
	resultIssued  = "issued"  // signed and recorded
	resultRefused = "refused" // bad request, unauthenticated or unauthorized
	resultError   = "error"   // the CA failed
)

// Reasons the server adds to those of authority, authn and authz.
const (
	reasonOK              = "ok"
	reasonMessageTooLarge = "message_too_large"
	reasonBatchTooLarge   = "batch_too_large"
	reasonCSRTooLarge     = "csr_too_large"
	reasonInternal        = "internal"
	// reasonStoreUnavailable: the registry store could not be reached.
	reasonStoreUnavailable = "store_unavailable"
)

// metrics are the server's Prometheus collectors.
type metrics struct {
	csrs     *prometheus.CounterVec
	signing  prometheus.Histogram
	caExpiry *prometheus.GaugeVec
	storeUp  *prometheus.GaugeVec
}

// newMetrics returns the server's collectors, registered in reg (nil: not
// exported) with the others the server exports (the admission's).
func newMetrics(reg *prometheus.Registry, others ...prometheus.Collector) (*metrics, error) {
	m := &metrics{
		csrs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "castellan_csr_total",
			Help: "Certificate signing requests by result (issued, refused, error) and reason.",
		}, []string{"result", "reason"}),
		signing: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "castellan_signing_duration_seconds",
			Help:    "Time to validate and sign one X.509-SVID (CSR parse, signature check, certificate creation).",
			Buckets: prometheus.ExponentialBuckets(25e-6, 2, 14),
		}),
		caExpiry: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "castellan_ca_certificate_expiry_timestamp_seconds",
			Help: "NotAfter of the CA certificates as a Unix timestamp, by certificate (root, intermediate).",
		}, []string{"cert"}),
		storeUp: newStoreUp(),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range append([]prometheus.Collector{m.csrs, m.signing, m.caExpiry, m.storeUp}, others...) {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *metrics) count(result, reason string) {
	m.csrs.WithLabelValues(result, reason).Inc()
}

func (m *metrics) observeSigning(d time.Duration) { m.signing.Observe(d.Seconds()) }

// sizeStats is a gRPC stats handler that counts signing requests that gRPC
// refused before any handler ran because they exceeded the message size
// limit, so they show up in castellan_csr_total like every other refusal.
type sizeStats struct{ m *metrics }

type methodKey struct{}

// TagRPC implements stats.Handler.
func (h sizeStats) TagRPC(ctx context.Context, info *stats.RPCTagInfo) context.Context {
	return context.WithValue(ctx, methodKey{}, info.FullMethodName)
}

// HandleRPC implements stats.Handler.
func (h sizeStats) HandleRPC(ctx context.Context, s stats.RPCStats) {
	end, ok := s.(*stats.End)
	if !ok || end.Error == nil || status.Code(end.Error) != codes.ResourceExhausted {
		return
	}
	method, _ := ctx.Value(methodKey{}).(string)
	if strings.HasPrefix(method, "/castellan.ca.v1.CertificateAuthorityService/") &&
		strings.Contains(status.Convert(end.Error).Message(), "larger than max") {
		h.m.count(resultRefused, reasonMessageTooLarge)
	}
}

// TagConn implements stats.Handler.
func (h sizeStats) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }

// HandleConn implements stats.Handler.
func (h sizeStats) HandleConn(context.Context, stats.ConnStats) {}
