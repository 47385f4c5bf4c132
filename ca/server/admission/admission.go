// Package admission is the CA's admission control: the server works on
// at most server.Config.MaxCSRsInFlight workload CSRs at once (parsing,
// signature check, authorization, signing, the ledger append). A call that would have to wait longer
// than a short bound for room is refused at once with ResourceExhausted
// and a RetryInfo delay, before anything of it is signed or logged, so
// that in a storm the CA answers every call within a few seconds instead
// of accepting work it cannot finish before the callers' deadlines
// (which would fail with DeadlineExceeded, the work wasted). Agents'
// clients retry after the delay (agent/client/retry.go).
package admission

import (
	"context"
	"math/rand/v2"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/castellan-dev/castellan/ca/refusal"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/semaphore"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Admission defaults.
const (
	// csrsPerCPU scales DefaultCapacity: at ~200-450 CPU-µs per
	// SVID, 4 x 64 CSRs per CPU are 50-115 ms of work each, so an
	// admitted call ends well within a second even on a loaded machine.
	csrsPerCPU = 4 * 64
	// DefaultWait is how long a call may wait for room before it
	// is refused (server.Config.AdmissionWait), and never more than half its
	// remaining deadline: 10s for an agent's 30s call. Measured in the
	// rotation storm (bench/storm), waiting in the FIFO queue keeps the CA
	// busy where a 2s bound bounced calls that then came back after the
	// CA had drained its queue (95s instead of 59s for 100,000 SVIDs).
	DefaultWait = 10 * time.Second
	// ReasonBusy labels castellan_csr_total for calls refused because the
	// CA had no room for their CSRs.
	ReasonBusy = "ca_busy"
)

// DefaultCapacity is the bound on CSRs worked on at once when
// server.Config.MaxCSRsInFlight is 0: 256 per CPU the Go runtime may use.
func DefaultCapacity() int { return csrsPerCPU * runtime.GOMAXPROCS(0) }

// Control bounds the CSRs in flight with a FIFO weighted semaphore.
type Control struct {
	sem      *semaphore.Weighted // nil: unbounded
	capacity int64
	maxWait  time.Duration
	inFlight atomic.Int64 // CSRs admitted and not yet released
	m        metrics
}

// metrics are the admission's Prometheus collectors.
type metrics struct {
	inFlight prometheus.Gauge
	busy     prometheus.Counter
}

// New returns the admission of at most capacity CSRs at once
// (negative: unbounded), waiting at most maxWait for room. Register its
// Collectors to export its metrics.
func New(capacity int, maxWait time.Duration) *Control {
	a := &Control{capacity: int64(capacity), maxWait: maxWait, m: metrics{
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "castellan_csrs_in_flight",
			Help: "Workload CSRs admitted and being worked on (parsed, authorized, signed, recorded); bounded by --max-csrs-in-flight.",
		}),
		busy: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "castellan_csrs_refused_busy_total",
			Help: "Workload CSRs refused with ResourceExhausted because the CA had no room for them within the admission wait (castellan_csr_total counts the calls, reason ca_busy).",
		}),
	}}
	if capacity > 0 {
		a.sem = semaphore.NewWeighted(a.capacity)
	}
	return a
}

// Collectors returns the admission's metrics: castellan_csrs_in_flight
// and castellan_csrs_refused_busy_total.
func (a *Control) Collectors() []prometheus.Collector {
	return []prometheus.Collector{a.m.inFlight, a.m.busy}
}

// Acquire admits a call of n CSRs and returns the weight to give back
// with Release once the call's certificates are recorded (or failed). A
// call larger than the capacity takes all of it. It waits for room at
// most the admission bound, and at most half of what is left of the
// call's deadline (the other half is for the work); then it refuses with
// ResourceExhausted and a RetryInfo delay. If ctx ends while it waits it
// returns ctx's status and holds nothing.
func (a *Control) Acquire(ctx context.Context, n int) (int64, error) {
	if a.sem == nil || n <= 0 {
		return 0, nil
	}
	w := min(int64(n), a.capacity)
	if a.sem.TryAcquire(w) {
		a.took(w)
		return w, nil
	}
	wait := a.maxWait
	if dl, ok := ctx.Deadline(); ok {
		wait = min(wait, time.Until(dl)/2)
	}
	if wait > 0 {
		wctx, cancel := context.WithTimeout(ctx, wait)
		err := a.sem.Acquire(wctx, w)
		cancel()
		if err == nil {
			a.took(w)
			return w, nil
		}
	}
	if ctx.Err() != nil {
		return 0, status.FromContextError(ctx.Err()).Err()
	}
	a.m.busy.Add(float64(n))
	return 0, a.refusal(n, max(wait, 0))
}

// Release gives back what Acquire took.
func (a *Control) Release(w int64) {
	if w == 0 {
		return
	}
	a.took(-w)
	a.sem.Release(w)
}

// took counts w more CSRs in flight (negative: fewer).
func (a *Control) took(w int64) {
	a.inFlight.Add(w)
	a.m.inFlight.Add(float64(w))
}

// refusal is the answer to a call of n CSRs that found no room within
// waited: retry after the admission bound, plus up to as much again of
// jitter so that callers refused together do not come back together.
func (a *Control) refusal(n int, waited time.Duration) *refusal.Error {
	e := refusal.Errorf(codes.ResourceExhausted, ReasonBusy,
		"server: the CA is busy: %d CSRs are being signed (at most %d at once) and this call's %d found no room within %s; nothing was signed, retry after the RetryInfo delay",
		a.inFlight.Load(), a.capacity, n, waited.Round(time.Millisecond))
	base := max(a.maxWait, 100*time.Millisecond)
	e.RetryAfter = base + rand.N(base)
	return e
}
