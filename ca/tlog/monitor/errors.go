package monitor

import "errors"

// Kinds of failure. Errors returned by this package wrap one of them (or
// a context error) with a sentence saying what was wrong.
var (
	// ErrFork: the log's new checkpoint contradicts the saved one: a
	// smaller tree (a rollback), or a tree that does not extend it. The
	// state is not advanced; an operator must investigate.
	ErrFork = errors.New("monitor: LOG FORK OR ROLLBACK")
	// ErrInvalid: what the server serves does not verify: a checkpoint
	// signature, a tile or entry that does not hash to the signed root, a
	// malformed bundle or entry.
	ErrInvalid = errors.New("monitor: the log does not verify")
	// ErrLimit: a response was larger than allowed, or the server or the
	// step took longer than allowed.
	ErrLimit = errors.New("monitor: limit exceeded")
	// ErrUnavailable: the log could not be read (connection failed, or an
	// HTTP status other than 200); retrying may help.
	ErrUnavailable = errors.New("monitor: the log is unavailable")
)

// errGone is a 410 Gone answer: the server pruned an entry bundle.
var errGone = errors.New("monitor: gone")
