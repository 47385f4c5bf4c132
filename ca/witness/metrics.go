package witness

import (
	"errors"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Results of one submission to one witness, the "result" label.
const (
	resultCosigned     = "cosigned"
	resultInconsistent = "inconsistent" // 422: a fork or a rewritten log
	resultStale        = "stale"        // the witness holds a larger tree
	resultRefused      = "refused"      // 400, 403, 404, other 4xx
	resultUnavailable  = "unavailable"  // network, timeout, 429, 5xx
	resultBadResponse  = "bad_response" // an answer that does not verify
	resultError        = "error"        // no consistency proof to send
)

// metrics are a Client's Prometheus metrics; a nil *metrics records nothing.
type metrics struct {
	submissions *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	size        *prometheus.GaugeVec
}

func newMetrics(reg *prometheus.Registry) *metrics {
	if reg == nil {
		return nil
	}
	m := &metrics{
		submissions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "castellan_witness_submissions_total",
			Help: "Checkpoint submissions to each witness, by result (cosigned, inconsistent, stale, refused, unavailable, bad_response, error). Alert on any inconsistent: a witness saw a fork of the log.",
		}, []string{"witness", "result"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "castellan_witness_submission_duration_seconds",
			Help:    "Time to obtain (or fail to obtain) one witness's cosignature, retry after a 409 included.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 15),
		}, []string{"witness"}),
		size: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "castellan_witness_cosigned_size",
			Help: "Tree size of the latest checkpoint each witness cosigned for this client.",
		}, []string{"witness"}),
	}
	reg.MustRegister(m.submissions, m.duration, m.size)
	return m
}

func (m *metrics) observe(witness, result string, d time.Duration) {
	if m == nil {
		return
	}
	m.submissions.WithLabelValues(witness, result).Inc()
	m.duration.WithLabelValues(witness).Observe(d.Seconds())
}

func (m *metrics) cosigned(witness string, size uint64) {
	if m == nil {
		return
	}
	m.size.WithLabelValues(witness).Set(float64(size))
}

// slogLevel logs a witness's refusal as inconsistent at Error (a fork is
// an incident), anything else at Warn.
func slogLevel(err error) slog.Level {
	if errors.Is(err, ErrInconsistent) {
		return slog.LevelError
	}
	return slog.LevelWarn
}
