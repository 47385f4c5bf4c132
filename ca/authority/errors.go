package authority

import (
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"

	"github.com/castellan-dev/castellan/ca/lifetime"
	"github.com/castellan-dev/castellan/ca/refusal"
)

// Reasons carried by an authority Error besides those of the request checks
// (ca/authority/leaf: Reason*). Each is a short snake_case string suitable
// as a Prometheus label value; the set is closed so label cardinality stays
// small.
const (
	ReasonIDMismatch = "id_mismatch"  // Sign called with an ID other than the CSR's
	ReasonInvalidTTL = "invalid_ttl"  // negative TTL
	ReasonTTLTooLong = "ttl_too_long" // TTL above Config.MaxTTL
)

// ReasonInternal is what ReasonOf returns for errors that are not
// refusals: failures of the CA itself rather than of the request.
const ReasonInternal = refusal.Internal

// Error is a rejected request: a CSR, SPIFFE ID or TTL that the CA will
// not sign. It is the CA's one refusal type (ca/refusal), always with code
// InvalidArgument, a Reason* constant and a message prefixed "authority: ".
type Error = refusal.Error

func reject(reason, format string, args ...any) *Error {
	return refusal.Errorf(codes.InvalidArgument, reason, "authority: "+format, args...)
}

// ReasonOf returns the Reason of the first refusal in err's chain, "" for
// a nil error, and ReasonInternal for any other error.
func ReasonOf(err error) string { return refusal.ReasonOf(err) }

// TTLError returns err, a refusal of ca/lifetime, as an *Error with reason
// ReasonInvalidTTL or ReasonTTLTooLong; nil stays nil and other errors are
// returned as they are.
func TTLError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, lifetime.ErrNegative):
		return refusal.New(codes.InvalidArgument, ReasonInvalidTTL, fmt.Errorf("authority: %w", err))
	case errors.Is(err, lifetime.ErrTooLong):
		return refusal.New(codes.InvalidArgument, ReasonTTLTooLong, fmt.Errorf("authority: %w", err))
	}
	return err
}
