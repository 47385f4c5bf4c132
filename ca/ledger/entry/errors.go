package entry

import (
	"errors"
	"fmt"

	"github.com/castellan-dev/castellan/internal/serial"
)

// Errors returned by every part of the ledger; test with errors.Is.
var (
	// ErrNotFound: no entry with the requested serial or index.
	ErrNotFound = errors.New("ledger: not found")
	// ErrInvalidEvent: an appended event is malformed.
	ErrInvalidEvent = errors.New("ledger: invalid event")
	// ErrInvalidArgument: a query, page token or proof request is malformed
	// or would scan without bound.
	ErrInvalidArgument = errors.New("ledger: invalid argument")
	// ErrClosed: the ledger has been closed.
	ErrClosed = errors.New("ledger: closed")
)

// Errors of a ledger that cannot take appends, or whose file is damaged.
var (
	// ErrDamaged: the ledger file failed its integrity check (damaged
	// pages, bbolt's consistency check, or a Merkle tree that does not
	// verify). The message names the file.
	ErrDamaged = errors.New("ledger: the ledger file is damaged")
	// ErrReadOnly: the ledger was opened read-only (ledger.Config.ReadOnly) and
	// refuses every write.
	ErrReadOnly = errors.New("ledger: opened read-only for forensics; it takes no appends")
)

// NormalizeSerial returns serial in the form the ledger stores
// (serial.Number's canonical form), or an error wrapping
// ErrInvalidArgument saying what is wrong with it.
func NormalizeSerial(s string) (string, error) {
	n, err := serial.Parse(s)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrInvalidArgument, err)
	}
	return n.String(), nil
}
