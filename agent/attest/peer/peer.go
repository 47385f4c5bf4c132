// Package peer is the process on the other end of a Unix socket connection
// to the agent, as the kernel reports it: its credentials at connect time
// (SO_PEERCRED), the process pinned with a pidfd so that a reused PID
// cannot borrow its identity (Process), and its binding to the connection
// (Binding): the client's end of the connection identified with sock_diag
// and held by that process alone. It also defines the attestation error
// and its reasons, which every attestor and the gRPC credentials of
// agent/attest report.
package peer

import (
	"errors"
	"fmt"
)

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
	// Binding ties the process to the connection; nil outside the
	// attestation credentials (agent/attest).
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
