// Package readiness reports whether the CA can issue: a Monitor pings the
// stores issuance depends on and keeps the gRPC health service's overall
// status SERVING while every one answers, NOT_SERVING while one does not.
package readiness

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// DefaultInterval is how often a Monitor pings the stores.
const DefaultInterval = time.Second

// Pinger is a dependency the server cannot issue without, checked for
// readiness (a store.DB).
type Pinger interface {
	// Ping returns nil while the dependency can be reached.
	Ping(ctx context.Context) error
}

// Config configures a Monitor. Health is required.
type Config struct {
	// Health is the health service whose overall status ("") the
	// Monitor sets (server.Server.Health).
	Health *health.Server
	// Stores are the stores the server needs to issue, by name (e.g.
	// "registry", "ledger").
	Stores map[string]Pinger
	// Interval is how often the Stores are pinged (0: DefaultInterval).
	Interval time.Duration
	// Logger receives the transitions (nil: discard).
	Logger *slog.Logger
	// Registry receives castellan_store_up (nil: not exported).
	Registry prometheus.Registerer
}

// Monitor keeps the health status in step with the stores.
type Monitor struct {
	cfg Config
	log *slog.Logger
	up  *prometheus.GaugeVec
}

// New returns the Monitor of cfg, its metric registered.
func New(cfg Config) (*Monitor, error) {
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	m := &Monitor{cfg: cfg, log: cfg.Logger, up: prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "castellan_store_up",
		Help: "1 while the store answers the readiness ping, 0 while it does not, by store (registry, ledger).",
	}, []string{"store"})}
	if cfg.Registry != nil {
		if err := cfg.Registry.Register(m.up); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// Run keeps the health service's overall status ("") SERVING while every
// one of the stores answers its Ping, and NOT_SERVING while one does not,
// checking every interval until ctx ends. It logs each transition and
// exports castellan_store_up by store. Not ready means "send new work
// elsewhere": the SyncAgent and WatchBundle streams stay open, and
// issuance fails with Unavailable on its own (the ledger cannot record
// it). After the server's Shutdown the status stays NOT_SERVING.
func (m *Monitor) Run(ctx context.Context) {
	t := time.NewTicker(m.cfg.Interval)
	defer t.Stop()
	var last []string
	for first := true; ; first = false {
		failing := m.checkStores(ctx)
		if ctx.Err() != nil {
			return
		}
		if first || !slices.Equal(failing, last) {
			m.setReady(failing, first)
		}
		last = failing
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// checkStores pings every store, each bounded by the interval, and
// returns "name: error" for those that failed, sorted by name.
func (m *Monitor) checkStores(ctx context.Context) []string {
	var failing []string
	for _, name := range slices.Sorted(maps.Keys(m.cfg.Stores)) {
		pctx, cancel := context.WithTimeout(ctx, m.cfg.Interval)
		err := m.cfg.Stores[name].Ping(pctx)
		cancel()
		up := 1.0
		if err != nil {
			up = 0
			failing = append(failing, name+": "+err.Error())
		}
		m.up.WithLabelValues(name).Set(up)
	}
	return failing
}

// setReady sets the health status from the failing stores and logs it.
func (m *Monitor) setReady(failing []string, first bool) {
	if len(failing) == 0 {
		m.cfg.Health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
		if !first {
			m.log.Info("ready: every store answers again; issuing")
		}
		return
	}
	m.cfg.Health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	m.log.Error("not ready: a store does not answer; issuance fails with Unavailable until it does, agents' streams stay open",
		"failing", failing)
}
