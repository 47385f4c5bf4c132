package authz

import (
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Reasons carried by *DeniedError; each is a Prometheus label value.
const (
	ReasonNotAssigned   = "not_assigned"    // no entry assigns the ID to the caller's node
	ReasonEntryNotFound = "entry_not_found" // the named entry does not exist
	ReasonEntryMismatch = "entry_mismatch"  // the named entry is for another ID or node
	ReasonNoPodAuthz    = "pod_authz_unavailable"
)

// DeniedError is a refused authorization; it maps to PermissionDenied.
type DeniedError struct {
	Reason string
	Err    error
}

func deny(reason, format string, args ...any) *DeniedError {
	return &DeniedError{Reason: reason, Err: fmt.Errorf(format, args...)}
}

// Error implements error.
func (e *DeniedError) Error() string { return "authz: " + e.Err.Error() }

// Unwrap returns the underlying error.
func (e *DeniedError) Unwrap() error { return e.Err }

// GRPCStatus returns a PermissionDenied status.
func (e *DeniedError) GRPCStatus() *status.Status {
	return status.New(codes.PermissionDenied, e.Error())
}

// InvalidEntryError is a registration entry that cannot be stored; it maps
// to InvalidArgument.
type InvalidEntryError struct{ Err error }

// Error implements error.
func (e *InvalidEntryError) Error() string { return "authz: invalid entry: " + e.Err.Error() }

// Unwrap returns the underlying error.
func (e *InvalidEntryError) Unwrap() error { return e.Err }

// GRPCStatus returns an InvalidArgument status.
func (e *InvalidEntryError) GRPCStatus() *status.Status {
	return status.New(codes.InvalidArgument, e.Error())
}
