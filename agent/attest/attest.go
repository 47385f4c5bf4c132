// Package attest identifies the workload on the other end of a Unix socket
// connection: who it runs as and which executable it runs (the unix
// attestor), or which Kubernetes pod it runs in (the k8s attestor), as
// selectors the agent matches against registration entries.
//
// # How a connection is attested
//
// When the agent accepts a connection, the kernel's SO_PEERCRED names the
// process that called connect and its effective uid and gid at that moment;
// the process is pinned with a pidfd (SO_PEERPIDFD where the kernel has it),
// so that a PID reused by another process cannot borrow the identity. The
// connection is then bound to that process (see Binding): the client's end
// of the connection is identified with sock_diag, and the pinned process
// must hold it in its descriptor table while no other process does. The
// attestor reads the process's properties, and the binding is checked again
// after that, so that what was read belongs to the process that holds the
// connection. Every later call and every push checks the binding again: the
// process is alive and still holds the connection, its executable and
// effective uid/gid are those it was attested with (unix attestor), and a
// scan of every process's descriptor table no older than a second finds no
// other holder. A failed check is final for the connection, and the call
// fails with PermissionDenied saying why.
//
// A program that connects and then execve's a trusted binary keeps the
// connection only through a descriptor that is not close-on-exec. The unix
// attestor therefore withholds unix:path and unix:sha256 from a process that
// holds its connection through such a descriptor: it is attested by uid and
// gid only, which SO_PEERCRED fixed at connect. Programs that create their
// sockets close-on-exec (Go, gRPC C-core, Rust, Python 3) keep their
// executable selectors; Envoy does not, so select Envoy by uid/gid.
//
// # What unix attestation protects against, and what it does not
//
// It stops a local user from obtaining another workload's identity by
// handing a connection on (fork, SCM_RIGHTS) or by execve'ing a trusted
// binary on a connection it opened, from borrowing a reused PID, and from
// keeping an identity after changing uid/gid or executable. It does not stop:
//   - root, or anyone with CAP_SYS_PTRACE or CAP_SYS_ADMIN on the node, who
//     can read any workload's memory and keys;
//   - a process of the same uid as the workload, which can ptrace it (unless
//     Yama's ptrace_scope forbids) or read /proc/PID/mem and take its key:
//     an identity is only as private as the uid it is bound to;
//   - any user who can run a trusted binary, when an entry selects only
//     unix:path and/or unix:sha256: that user runs the binary under their own
//     uid and it receives the identity honestly. Select unix:uid (and
//     unix:gid) for every identity that matters;
//   - a workload that itself gives its connection, certificate or key away.
//
// The descriptor scan sees descriptor tables, not descriptors in flight in
// SCM_RIGHTS messages, and is not atomic; it is a second line behind the
// close-on-exec and executable checks, and catches accidental sharing (a
// forked child that uses its parent's connection). Checking who holds a
// connection needs root, or CAP_SYS_PTRACE to read other users' descriptor
// tables; a client in another network namespace (a pod) also needs
// CAP_NET_ADMIN and CAP_SYS_ADMIN to look its socket up. Without them
// attestation fails closed, saying which is missing.
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
