// Package rotate decides when the agent renews an SVID and how long it waits
// after a failure. It holds no state and performs no I/O: the manager asks it
// "when", and does the "how" itself.
package rotate

import (
	"math/rand/v2"
	"time"
)

// Policy is the renewal policy. The zero value is usable: it renews at half
// the lifetime minus up to 10% jitter and backs off from 1s up to 30s.
type Policy struct {
	// Jitter is the largest fraction of the lifetime subtracted at random
	// from the half-life renewal point; 0 means 0.1.
	Jitter float64
	// BackoffBase is the first retry delay after a failure; 0 means 1s.
	BackoffBase time.Duration
	// BackoffCap bounds every retry delay; 0 means 30s. The delay is also
	// never longer than a tenth of the SVID's lifetime.
	BackoffCap time.Duration
	// BatchWindow: identities due within this long of the earliest due one
	// are renewed in the same batch; 0 means 1s.
	BatchWindow time.Duration
	// MaxBatch bounds the identities renewed in one call to the CA; 0
	// means DefaultMaxBatch. A batch waits for the CA to sign all of it,
	// so when every agent renews everything at once (a storm after an
	// outage) the work in flight at the CA is agents × MaxBatch, and each
	// call lasts about that divided by the CA's rate: a smaller batch keeps
	// calls short of their deadline, whose expiry would waste the CA's
	// work on answers nobody reads.
	MaxBatch int
	// TaintWindow spreads the replacement of SVIDs under a tainted
	// authority: each is renewed at a random point of this window after
	// the agent learns of the taint; 0 means 30s.
	TaintWindow time.Duration
	// Rand returns a number in [0, 1); nil means math/rand/v2.Float64.
	Rand func() float64
}

// DefaultMaxBatch is MaxBatch's default: past 100, a larger batch saves
// almost no CPU per SVID (the per-call cost is already spread over 100),
// while it makes every call of a storm longer.
const DefaultMaxBatch = 100

// BatchSize returns MaxBatch, or DefaultMaxBatch if it is not positive.
func (p Policy) BatchSize() int {
	if p.MaxBatch <= 0 {
		return DefaultMaxBatch
	}
	return p.MaxBatch
}

// RenewAt returns when an SVID valid until notAfter, received at
// receivedAt, should be renewed: at start + lifetime/2 − a random jitter of
// up to Jitter·lifetime, where start is the later of notBefore and
// receivedAt. CAs backdate NotBefore to allow for clock skew; counting the
// lifetime from the leaf's NotBefore alone would make a short-lived SVID
// due for renewal the moment it arrives.
func (p Policy) RenewAt(receivedAt, notBefore, notAfter time.Time) time.Time {
	if receivedAt.After(notBefore) {
		notBefore = receivedAt
	}
	life := notAfter.Sub(notBefore)
	if life <= 0 {
		return notBefore
	}
	jitter := time.Duration(p.rand() * p.jitter() * float64(life))
	return notBefore.Add(life/2 - jitter)
}

// Backoff returns the delay before retry number attempt (1 for the first
// retry) of an SVID with the given lifetime: exponential from BackoffBase,
// capped at min(BackoffCap, lifetime/10), with "equal jitter" so that agents
// that failed together do not retry together. A lifetime of 0 means unknown.
func (p Policy) Backoff(attempt int, lifetime time.Duration) time.Duration {
	base, ceiling := p.BackoffBase, p.BackoffCap
	if base <= 0 {
		base = time.Second
	}
	if ceiling <= 0 {
		ceiling = 30 * time.Second
	}
	if lifetime > 0 && lifetime/10 < ceiling {
		ceiling = max(lifetime/10, base)
	}
	d := base
	for i := 1; i < attempt && d < ceiling; i++ {
		d *= 2
	}
	d = min(d, ceiling)
	return d/2 + time.Duration(p.rand()*float64(d/2))
}

// TaintedRenewAt returns when an SVID planned for renewal at planned must
// be renewed now that its chain includes a tainted authority, seen at
// now: at a random point of [now, now+TaintWindow), so that every agent of
// the trust domain does not ask the CA at once, but never later than
// planned. A taint is an incident: the window is short, whatever the
// SVID's lifetime.
func (p Policy) TaintedRenewAt(now, planned time.Time) time.Time {
	w := p.TaintWindow
	if w <= 0 {
		w = 30 * time.Second
	}
	at := now.Add(time.Duration(p.rand() * float64(w)))
	if planned.Before(at) {
		return planned
	}
	return at
}

// Due reports whether an SVID planned for renewal at renewAt should go into
// the batch being sent at now.
func (p Policy) Due(now, renewAt time.Time) bool {
	w := p.BatchWindow
	if w <= 0 {
		w = time.Second
	}
	return !renewAt.After(now.Add(w))
}

func (p Policy) jitter() float64 {
	if p.Jitter <= 0 {
		return 0.1
	}
	return p.Jitter
}

func (p Policy) rand() float64 {
	if p.Rand == nil {
		return rand.Float64()
	}
	return p.Rand()
}
