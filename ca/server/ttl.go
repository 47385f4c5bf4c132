package server

import (
	"fmt"
	"time"

	"github.com/castellan-dev/castellan/ca/authority"
	"github.com/castellan-dev/castellan/ca/authz"
)

// svidTTL is the lifetime rule for a workload SVID. requested is the
// lifetime the caller asked for (0: none; negative and above-maximum
// values were refused by requestTTL), g the grant that authorized it, and
// defaultTTL and maxTTL the CA's.
//
//   - The ceiling is the entry's TTL (g.TTL) when it has one, else the
//     CA's maximum. Kubernetes pod grants have no TTL.
//   - 0 < requested <= ceiling: requested.
//   - requested == 0: the entry's TTL, or the CA's default without one.
//   - requested > ceiling: refused with InvalidArgument naming the
//     ceiling, never clamped (as the CA's maximum is handled).
//
// An entry TTL above the CA's maximum (the maximum was lowered after the
// entry was created) counts as the maximum.
func svidTTL(requested time.Duration, g authz.Grant, defaultTTL, maxTTL time.Duration) (time.Duration, error) {
	ceiling, byEntry := maxTTL, false
	if g.TTL > 0 && g.TTL < maxTTL {
		ceiling, byEntry = g.TTL, true
	}
	switch {
	case requested < 0:
		return 0, &authority.Error{Reason: authority.ReasonInvalidTTL,
			Err: fmt.Errorf("requested TTL %s is negative; use 0 for the default", requested)}
	case requested > ceiling && byEntry:
		return 0, &authority.Error{Reason: authority.ReasonTTLTooLong,
			Err: fmt.Errorf("requested TTL %s exceeds %s, the TTL of registration entry %s, which is the ceiling for this identity; request at most %s, or 0 for the entry's TTL",
				requested, ceiling, g.EntryID, ceiling)}
	case requested > ceiling:
		return 0, &authority.Error{Reason: authority.ReasonTTLTooLong,
			Err: fmt.Errorf("requested TTL %s exceeds the maximum %s", requested, maxTTL)}
	case requested > 0:
		return requested, nil
	case g.TTL > 0:
		return ceiling, nil
	}
	return min(defaultTTL, maxTTL), nil
}
