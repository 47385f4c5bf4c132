// Package attest identifies the workload on the other end of a Unix socket
// connection: who it runs as and which executable it runs, as selectors the
// agent matches against registration entries.
//
// The peer's process is pinned with a pidfd when the connection is accepted,
// so that a PID reused by another process cannot borrow the identity of the
// process that connected; attestors read the process's properties and then
// check that the pinned process is still alive, which proves the PID was not
// reused in between.
package attest

import (
	"context"
	"errors"
	"fmt"

	"github.com/castellan-dev/castellan/agent/state"
)

// Attestor turns a connected peer into the selectors that describe it.
// Implementations must check peer.Process.Alive after reading anything
// through peer.PID and fail if it is not, and must be safe for concurrent use.
type Attestor interface {
	Attest(ctx context.Context, peer Peer) ([]state.Selector, error)
}

// Peer is the process on the other end of a Unix socket connection, as the
// kernel reported it when the connection was accepted.
type Peer struct {
	// PID, UID and GID are the peer's credentials from SO_PEERCRED, taken
	// when the peer called connect.
	PID int
	UID uint32
	GID uint32
	// Process pins the peer's process; it stays valid while the connection
	// is open.
	Process *Process
	// Binding ties the process to the connection; nil outside Credentials.
	Binding *Binding
}

// Reasons an attestation fails, used as the reason label of failure metrics.
const (
	ReasonPeerCred  = "peercred"       // SO_PEERCRED unavailable (not a Unix socket)
	ReasonPin       = "pidfd"          // the process could not be pinned
	ReasonExited    = "process_exited" // the pinned process is gone
	ReasonExe       = "exe"            // the executable could not be read
	ReasonAttestor  = "attestor"       // any other attestor failure
	ReasonTransport = "transport"      // no attestation on the connection
)

// Error is an attestation failure with a short machine-readable reason
// (one of the Reason constants) and the underlying cause.
type Error struct {
	Reason string
	Err    error
}

// Error describes the failure.
func (e *Error) Error() string { return fmt.Sprintf("attest: %s: %v", e.Reason, e.Err) }

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// ReasonOf returns the reason of an attestation error, or ReasonAttestor if
// err is not an *Error.
func ReasonOf(err error) string {
	var ae *Error
	if errors.As(err, &ae) {
		return ae.Reason
	}
	return ReasonAttestor
}
