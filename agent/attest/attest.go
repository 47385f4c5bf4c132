// Package attest identifies the workload on the other end of a Unix socket
// connection: who it runs as and which executable it runs (the unix
// attestor), or which Kubernetes pod it runs in (the k8s attestor), as
// selectors the agent matches against registration entries. It holds the
// gRPC transport credentials that attest every connection the agent's
// workload sockets accept and check the attestation again on every call
// (Credentials, FromContext); the parts live below it:
//   - agent/attest/peer: the peer process (SO_PEERCRED), pinned with a
//     pidfd, and its binding to the connection; the attestation error;
//   - agent/attest/procfs: what /proc says of a process and which
//     processes hold a socket;
//   - agent/attest/unixattest and agent/attest/k8sattest: the attestors.
//
// # How a connection is attested
//
// When the agent accepts a connection, the kernel's SO_PEERCRED names the
// process that called connect and its effective uid and gid at that moment;
// the process is pinned with a pidfd (SO_PEERPIDFD where the kernel has it),
// so that a PID reused by another process cannot borrow the identity. The
// connection is then bound to that process (see peer.Binding): the client's end
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

	"github.com/castellan-dev/castellan/agent/attest/peer"
	"github.com/castellan-dev/castellan/agent/state"
)

// Attestor turns a connected peer into the selectors that describe it.
// Implementations must check p.Process.Alive after reading anything
// through p.PID and fail if it is not, and must be safe for concurrent
// use. The unix attestor (agent/attest/unixattest) and the Kubernetes
// attestor (agent/attest/k8sattest) implement it.
type Attestor interface {
	Attest(ctx context.Context, p peer.Peer) ([]state.Selector, error)
}
