package authz

import (
	"fmt"

	"google.golang.org/grpc/codes"

	"github.com/castellan-dev/castellan/ca/refusal"
)

// Reasons of authorization refusals (Deny) and of entries that cannot be
// stored; each is a Prometheus label value.
const (
	ReasonNotAssigned   = "not_assigned"    // no entry assigns the ID to the caller's node
	ReasonEntryNotFound = "entry_not_found" // the named entry does not exist
	ReasonEntryMismatch = "entry_mismatch"  // the named entry is for another ID or node
	ReasonNoPodAuthz    = "pod_authz_unavailable"
	ReasonInvalidEntry  = "invalid_entry" // a registration entry that cannot be stored
)

// Deny returns a refused authorization (a *refusal.Error):
// PermissionDenied, with the message formatted as fmt.Errorf does and
// prefixed "authz: ".
func Deny(reason, format string, args ...any) *refusal.Error {
	return refusal.Errorf(codes.PermissionDenied, reason, "authz: "+format, args...)
}

func deny(reason, format string, args ...any) *refusal.Error { return Deny(reason, format, args...) }

// invalidEntry is a registration entry that cannot be stored:
// InvalidArgument, reason ReasonInvalidEntry.
func invalidEntry(err error) *refusal.Error {
	return refusal.New(codes.InvalidArgument, ReasonInvalidEntry, fmt.Errorf("authz: invalid entry: %w", err))
}
