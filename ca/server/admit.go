package server

// Admission control: the server works on at most Config.MaxCSRsInFlight
// workload CSRs at once (parsing, signature check, authorization,
// signing, the ledger append). A call that would have to wait longer
// than a short bound for room is refused at once with ResourceExhausted
// and a RetryInfo delay, before anything of it is signed or logged, so
// that in a storm the CA answers every call within a few seconds instead
// of accepting work it cannot finish before the callers' deadlines
// (which would fail with DeadlineExceeded, the work wasted). Agents'
// clients retry after the delay (agent/client/retry.go).

import (
	"context"
	"math/rand/v2"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/castellan-dev/castellan/ca/refusal"
	"golang.org/x/sync/semaphore"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Admission defaults.
const (
	// csrsPerCPU scales DefaultMaxCSRsInFlight: at ~200-450 CPU-µs per
	// SVID, 4 x 64 CSRs per CPU are 50-115 ms of work each, so an
	// admitted call ends well within a second even on a loaded machine.
	csrsPerCPU = 4 * 64
	// DefaultAdmissionWait is how long a call may wait for room before it
	// is refused (Config.AdmissionWait), and never more than half its
	// remaining deadline: 10s for an agent's 30s call. Measured in the
	// rotation storm (bench/storm), waiting in the FIFO queue keeps the CA
	// busy where a 2s bound bounced calls that then came back after the
	// CA had drained its queue (95s instead of 59s for 100,000 SVIDs).
	DefaultAdmissionWait = 10 * time.Second
	// reasonBusy labels castellan_csr_total for calls refused because the
	// CA had no room for their CSRs.
	reasonBusy = "ca_busy"
)

// DefaultMaxCSRsInFlight is the bound on CSRs worked on at once when
// Config.MaxCSRsInFlight is 0: 256 per CPU the Go runtime may use.
func DefaultMaxCSRsInFlight() int { return csrsPerCPU * runtime.GOMAXPROCS(0) }

// admission bounds the CSRs in flight with a FIFO weighted semaphore.
type admission struct {
	sem      *semaphore.Weighted // nil: unbounded
	capacity int64
	maxWait  time.Duration
	inFlight atomic.Int64 // CSRs admitted and not yet released
	m        *metrics
}

// newAdmission returns the admission of at most capacity CSRs at once
// (negative: unbounded), waiting at most maxWait for room.
func newAdmission(capacity int, maxWait time.Duration, m *metrics) *admission {
	a := &admission{capacity: int64(capacity), maxWait: maxWait, m: m}
	if capacity > 0 {
		a.sem = semaphore.NewWeighted(a.capacity)
	}
	return a
}

// acquire admits a call of n CSRs and returns the weight to give back
// with release once the call's certificates are recorded (or failed). A
// call larger than the capacity takes all of it. It waits for room at
// most the admission bound, and at most half of what is left of the
// call's deadline (the other half is for the work); then it refuses with
// ResourceExhausted and a RetryInfo delay. If ctx ends while it waits it
// returns ctx's status and holds nothing.
func (a *admission) acquire(ctx context.Context, n int) (int64, error) {
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

// release gives back what acquire took.
func (a *admission) release(w int64) {
	if w == 0 {
		return
	}
	a.took(-w)
	a.sem.Release(w)
}

// took counts w more CSRs in flight (negative: fewer).
func (a *admission) took(w int64) {
	a.inFlight.Add(w)
	a.m.inFlight.Add(float64(w))
}

// refusal is the answer to a call of n CSRs that found no room within
// waited: retry after the admission bound, plus up to as much again of
// jitter so that callers refused together do not come back together.
func (a *admission) refusal(n int, waited time.Duration) *refusal.Error {
	e := refuse(codes.ResourceExhausted, reasonBusy,
		"the CA is busy: %d CSRs are being signed (at most %d at once) and this call's %d found no room within %s; nothing was signed, retry after the RetryInfo delay",
		a.inFlight.Load(), a.capacity, n, waited.Round(time.Millisecond))
	base := max(a.maxWait, 100*time.Millisecond)
	e.RetryAfter = base + rand.N(base)
	return e
}
