// Package refusal is the CA's one error type for what it tells a caller:
// a request it refuses (a bad CSR, an unknown caller, a denied identity, a
// quota) or a failure of its own (the ledger is unavailable). An Error
// carries the gRPC status code, a reason (a short snake_case label for the
// castellan_csr_total metric and the logs) and a message that says what was
// wrong and what to do. The server's interceptors turn it into the gRPC
// status and count it; handlers just return it.
package refusal

import (
	"errors"
	"fmt"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Internal is what ReasonOf returns for an error that is not a refusal:
// a failure of the CA rather than of the request.
const Internal = "internal"

// Error is a refusal, or a failure of the CA told to the caller. Match it
// with errors.As; it wraps Err and Cause for errors.Is.
type Error struct {
	// Code is the gRPC status code the caller receives.
	Code codes.Code
	// Reason names the refusal ("not_assigned", "ttl_too_long", ...): a
	// Prometheus label value from a small closed set. Empty for a failure
	// of the CA (see Failure).
	Reason string
	// Err says what was wrong, in words the caller can act on, prefixed by
	// the package that refused ("authz: ..."); it is the status message.
	Err error
	// Cause is the underlying failure behind a terse message: logged and
	// matched by errors.Is, never sent to the caller. May be nil.
	Cause error
	// RetryAfter, when positive, is sent as a RetryInfo detail so that
	// clients back off for as long as they are told.
	RetryAfter time.Duration
}

// New returns a refusal of the request with code, reason and message err.
func New(code codes.Code, reason string, err error) *Error {
	return &Error{Code: code, Reason: reason, Err: err}
}

// Errorf is New with a message formatted as fmt.Errorf does (%w wraps).
func Errorf(code codes.Code, reason, format string, args ...any) *Error {
	return New(code, reason, fmt.Errorf(format, args...))
}

// Failure returns a failure of the CA (no reason: counted as an error, not
// a refusal) that tells the caller msg and keeps cause for the logs.
func Failure(code codes.Code, msg string, cause error) *Error {
	return &Error{Code: code, Err: errors.New(msg), Cause: cause}
}

// Error returns the message.
func (e *Error) Error() string { return e.Err.Error() }

// Unwrap returns the message's error and the cause.
func (e *Error) Unwrap() []error {
	if e.Cause == nil {
		return []error{e.Err}
	}
	return []error{e.Err, e.Cause}
}

// GRPCStatus returns the status the caller receives: Code and the
// message, with a RetryInfo detail when RetryAfter is set.
func (e *Error) GRPCStatus() *status.Status {
	st := status.New(e.Code, e.Error())
	if e.RetryAfter <= 0 {
		return st
	}
	if d, err := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(e.RetryAfter)}); err == nil {
		return d
	}
	return st
}

// ReasonOf returns the Reason of the first refusal in err's chain, "" for
// a nil error and Internal for an error that is not a refusal (or a
// Failure, which has no reason).
func ReasonOf(err error) string {
	if err == nil {
		return ""
	}
	if e, ok := As(err); ok && e.Reason != "" {
		return e.Reason
	}
	return Internal
}

// As returns the first *Error in err's chain.
func As(err error) (*Error, bool) {
	var e *Error
	ok := errors.As(err, &e)
	return e, ok
}
