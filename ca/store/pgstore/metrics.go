package pgstore

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/castellan-dev/castellan/ca/store"
)

// metrics are a Conn's Prometheus collectors. Conns sharing a registry
// share them.
type metrics struct {
	transactions  *prometheus.CounterVec
	updateSeconds *prometheus.HistogramVec
	reconnects    prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		transactions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "castellan_store_transactions_total",
			Help: "Transactions on the PostgreSQL store, by keyspace, kind (view, update) and result (ok, error: refused by the caller's function, unavailable, commit_unknown, closed).",
		}, []string{"keyspace", "kind", "result"}),
		updateSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "castellan_store_update_duration_seconds",
			Help:    "Time of an Update on the PostgreSQL store, from its start (waiting for the keyspace lock included) to its commit.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}, []string{"keyspace"}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "castellan_store_listener_reconnects_total",
			Help: "Reconnections of the PostgreSQL store's LISTEN connection after it was lost.",
		}),
	}
	if reg == nil {
		return m, nil
	}
	var err error
	if m.transactions, err = register(reg, m.transactions); err != nil {
		return nil, err
	}
	if m.updateSeconds, err = register(reg, m.updateSeconds); err != nil {
		return nil, err
	}
	if m.reconnects, err = register(reg, m.reconnects); err != nil {
		return nil, err
	}
	return m, nil
}

// register registers c, or returns the collector already registered in
// its place.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	err := reg.Register(c)
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing, nil
		}
	}
	if err != nil {
		return c, fmt.Errorf("pgstore: register metrics: %w", err)
	}
	return c, nil
}

// transaction counts one transaction by its result.
func (m *metrics) transaction(keyspace, kind string, err error) {
	result := "ok"
	switch {
	case err == nil:
	case errors.Is(err, store.ErrCommitUnknown):
		result = "commit_unknown"
	case errors.Is(err, store.ErrUnavailable):
		result = "unavailable"
	case errors.Is(err, store.ErrClosed):
		result = "closed"
	default:
		result = "error"
	}
	m.transactions.WithLabelValues(keyspace, kind, result).Inc()
}
