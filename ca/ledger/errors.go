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

// Errors of a ledger that cannot take appends, or whose file is damaged.
var (
	// ErrDamaged: the ledger file failed its integrity check (damaged
	// pages, bbolt's consistency check, or a Merkle tree that does not
	// verify). The message names the file.
	ErrDamaged = errors.New("ledger: the ledger file is damaged")
	// ErrReadOnly: the ledger was opened read-only (Options.ReadOnly) and
	// refuses every write.
	ErrReadOnly = errors.New("ledger: opened read-only for forensics; it takes no appends")
)
