package readiness

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// pinger is a store whose Ping answers err.
type pinger struct {
	mu  sync.Mutex
	err error
}

func (p *pinger) set(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.err = err
}

func (p *pinger) Ping(context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// waitStatus waits (at most 10s) until h's overall status is want.
func waitStatus(t *testing.T, h *health.Server, want healthpb.HealthCheckResponse_ServingStatus) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := h.Check(context.Background(), &healthpb.HealthCheckRequest{})
		if err == nil && resp.GetStatus() == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("health status %v, %v; want %v", resp.GetStatus(), err, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A store that stops answering makes the server not ready, and ready
// again when it answers; castellan_store_up follows it, by store.
func TestMonitorFollowsTheStores(t *testing.T) {
	h := health.NewServer()
	h.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	reg := prometheus.NewRegistry()
	registry, ledger := &pinger{}, &pinger{}
	m, err := New(Config{Health: h, Stores: map[string]Pinger{"registry": registry, "ledger": ledger},
		Interval: 5 * time.Millisecond, Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		m.Run(ctx)
	}()
	defer func() { cancel(); <-done }()

	waitStatus(t, h, healthpb.HealthCheckResponse_SERVING)
	ledger.set(errors.New("disk gone"))
	waitStatus(t, h, healthpb.HealthCheckResponse_NOT_SERVING)
	if up := testutil.ToFloat64(m.up.WithLabelValues("ledger")); up != 0 {
		t.Errorf("castellan_store_up{store=ledger} = %v while it fails, want 0", up)
	}
	if up := testutil.ToFloat64(m.up.WithLabelValues("registry")); up != 1 {
		t.Errorf("castellan_store_up{store=registry} = %v while it answers, want 1", up)
	}
	ledger.set(nil)
	waitStatus(t, h, healthpb.HealthCheckResponse_SERVING)
	if _, err := New(Config{Health: h, Registry: reg}); err == nil {
		t.Error("a second monitor registered castellan_store_up in the same registry")
	}
}
