// Package lifetime owns how long an SVID the CA signs may live, in one
// place: the CA's default and maximum, the registration entry's TTL as the
// ceiling for its identity, the conversion of requested seconds, and the
// rule that no leaf outlives the certificate that signs it.
//
// A requested TTL is never clamped: above the ceiling it is refused, so a
// workload that asks for a lifetime either gets it or learns why not. The
// signer's expiry is the one exception (NotAfter), since no request can
// move it.
package lifetime

import (
	"errors"
	"fmt"
	"math"
	"time"
)

// Errors wrapped by the refusals of this package: callers map them to
// their own refusal types (ca/authority's ReasonInvalidTTL and
// ReasonTTLTooLong).
var (
	ErrNegative = errors.New("negative TTL")
	ErrTooLong  = errors.New("TTL too long")
)

// refusal is a refused TTL: its message says what to ask for instead, and
// it unwraps to ErrNegative or ErrTooLong.
type refusal struct {
	kind error
	msg  string
}

func (r *refusal) Error() string { return r.msg }
func (r *refusal) Unwrap() error { return r.kind }

func refuse(kind error, format string, args ...any) error {
	return &refusal{kind: kind, msg: fmt.Sprintf(format, args...)}
}

// Policy is the CA's SVID lifetime settings. Build it with New.
type Policy struct {
	def, max time.Duration
}

// New returns the policy with default lifetime def and maximum max: both
// positive, def at most max.
func New(def, max time.Duration) (Policy, error) {
	switch {
	case def <= 0 || max <= 0:
		return Policy{}, fmt.Errorf("default TTL %s and max TTL %s must be positive", def, max)
	case def > max:
		return Policy{}, fmt.Errorf("default TTL %s exceeds max TTL %s", def, max)
	}
	return Policy{def: def, max: max}, nil
}

// Default is the lifetime of an SVID when neither request nor entry names one.
func (p Policy) Default() time.Duration { return p.def }

// Max is the longest lifetime any request may ask for.
func (p Policy) Max() time.Duration { return p.max }

// Seconds converts a TTL given in seconds (as requests and entries carry
// it), refusing a negative one and one above max (without overflowing on
// absurd values). max 0 means no bound but overflow.
func Seconds(secs int64, max time.Duration) (time.Duration, error) {
	switch {
	case secs < 0:
		return 0, refuse(ErrNegative, "requested TTL %ds is negative; use 0 for the default", secs)
	case secs > math.MaxInt64/int64(time.Second) || max > 0 && secs > int64(max/time.Second):
		return 0, refuse(ErrTooLong, "requested TTL %ds exceeds the maximum %s", secs, max)
	}
	return time.Duration(secs) * time.Second, nil
}

// Request converts a requested TTL in seconds under p's maximum, before
// the request is authorized; For then applies the entry's ceiling.
func (p Policy) Request(secs int64) (time.Duration, error) { return Seconds(secs, p.max) }

// For returns the lifetime of an SVID for which requested was asked (0:
// none) under a registration entry with TTL entryTTL (0: none, as for
// Kubernetes pod identities):
//
//   - The ceiling is entryTTL when set, else the CA's maximum. An entry
//     TTL above the maximum (the maximum was lowered after the entry was
//     created) counts as the maximum.
//   - 0 < requested <= ceiling: requested.
//   - requested == 0: the entry's TTL, or the CA's default without one.
//   - requested > ceiling or negative: refused, naming the ceiling.
func (p Policy) For(requested, entryTTL time.Duration, entryID string) (time.Duration, error) {
	ceiling, byEntry := p.max, false
	if entryTTL > 0 && entryTTL < p.max {
		ceiling, byEntry = entryTTL, true
	}
	switch {
	case requested < 0:
		return 0, refuse(ErrNegative, "requested TTL %s is negative; use 0 for the default", requested)
	case requested > ceiling && byEntry:
		return 0, refuse(ErrTooLong, "requested TTL %s exceeds %s, the TTL of registration entry %s, which is the ceiling for this identity; request at most %s, or 0 for the entry's TTL",
			requested, ceiling, entryID, ceiling)
	case requested > ceiling:
		return 0, refuse(ErrTooLong, "requested TTL %s exceeds the maximum %s", requested, p.max)
	case requested > 0:
		return requested, nil
	case entryTTL > 0:
		return ceiling, nil
	}
	return p.def, nil
}

// NotAfter returns when a leaf signed at now for ttl expires: now+ttl, but
// never after signerNotAfter, the expiry of the certificate signing it.
func NotAfter(now time.Time, ttl time.Duration, signerNotAfter time.Time) time.Time {
	if na := now.Add(ttl); na.Before(signerNotAfter) {
		return na
	}
	return signerNotAfter
}
