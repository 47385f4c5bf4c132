package ledger

import "errors"

// Errors returned by the ledger; test with errors.Is.
var (
	// ErrNotFound: no entry with the requested serial or index.
	ErrNotFound = errors.New("ledger: not found")
	// ErrInvalidEvent: an appended event is malformed.
	ErrInvalidEvent = errors.New("ledger: invalid event")
	// ErrInvalidArgument: a query, page token or proof request is malformed
	// or would scan without bound.
	ErrInvalidArgument = errors.New("ledger: invalid argument")
	// ErrAlreadyRevoked: Revoke of a serial that is already revoked.
	ErrAlreadyRevoked = errors.New("ledger: certificate already revoked")
	// ErrClosed: the ledger has been closed.
	ErrClosed = errors.New("ledger: closed")
)
