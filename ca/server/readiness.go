package server

import (
	"context"
	"maps"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// DefaultReadinessInterval is how often MonitorReadiness pings the stores.
const DefaultReadinessInterval = time.Second

// Pinger is a dependency the server cannot issue without, checked for
// readiness (a store.DB).
type Pinger interface {
	// Ping returns nil while the dependency can be reached.
	Ping(ctx context.Context) error
}

// MonitorReadiness keeps the health service's overall status ("") SERVING
// while every one of Config.Stores answers its Ping, and NOT_SERVING while
// one does not, checking every Config.ReadinessInterval until ctx ends.
// It logs each transition and exports castellan_store_up by store. Not
// ready means "send new work elsewhere": the SyncAgent and WatchBundle
// streams stay open, and issuance fails with Unavailable on its own (the
// ledger cannot record it). After Shutdown the status stays NOT_SERVING.
func (s *Server) MonitorReadiness(ctx context.Context) {
	t := time.NewTicker(s.cfg.ReadinessInterval)
	defer t.Stop()
	var last []string
	for first := true; ; first = false {
		failing := s.checkStores(ctx)
		if ctx.Err() != nil {
			return
		}
		if first || !slices.Equal(failing, last) {
			s.setReady(failing, first)
		}
		last = failing
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// checkStores pings every store, each bounded by the readiness interval,
// and returns "name: error" for those that failed, sorted by name.
func (s *Server) checkStores(ctx context.Context) []string {
	var failing []string
	for _, name := range slices.Sorted(maps.Keys(s.cfg.Stores)) {
		pctx, cancel := context.WithTimeout(ctx, s.cfg.ReadinessInterval)
		err := s.cfg.Stores[name].Ping(pctx)
		cancel()
		up := 1.0
		if err != nil {
			up = 0
			failing = append(failing, name+": "+err.Error())
		}
		s.metrics.storeUp.WithLabelValues(name).Set(up)
	}
	return failing
}

// setReady sets the health status from the failing stores and logs it.
func (s *Server) setReady(failing []string, first bool) {
	if len(failing) == 0 {
		s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
		if !first {
			s.log.Info("ready: every store answers again; issuing")
		}
		return
	}
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	s.log.Error("not ready: a store does not answer; issuance fails with Unavailable until it does, agents' streams stay open",
		"failing", failing)
}

func newStoreUp() *prometheus.GaugeVec {
	return prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "castellan_store_up",
		Help: "1 while the store answers the readiness ping, 0 while it does not, by store (registry, ledger).",
	}, []string{"store"})
}
