package peer

import (
	"errors"
	"fmt"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Process is a pinned process: a pidfd that keeps referring to the same
// process even after it exits and its PID is reused. It is safe for
// concurrent use.
type Process struct {
	pid int
	mu  sync.Mutex
	fd  int // -1 once closed
}

// Pin opens a pidfd for pid. Prefer Of, which takes the pidfd from the
// socket itself where the kernel supports it; Pin alone cannot exclude that
// pid was reused before the call.
func Pin(pid int) (*Process, error) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, &Error{Reason: ReasonPin, Err: fmt.Errorf("pidfd_open %d: %w", pid, err)}
	}
	return &Process{pid: pid, fd: fd}, nil
}

// PID returns the process ID the handle was pinned with.
func (p *Process) PID() int { return p.pid }

// Alive returns nil if the pinned process has not exited, and an *Error
// with ReasonExited if it has (or if the handle is closed).
func (p *Process) Alive() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fd < 0 {
		return &Error{Reason: ReasonExited, Err: errors.New("process handle closed")}
	}
	err := unix.PidfdSendSignal(p.fd, 0, nil, 0)
	if err == nil || errors.Is(err, unix.EPERM) { // EPERM: alive, not ours to signal
		return nil
	}
	return &Error{Reason: ReasonExited, Err: fmt.Errorf("process %d: %w", p.pid, err)}
}

// Close releases the pidfd. It is safe to call more than once.
func (p *Process) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fd < 0 {
		return nil
	}
	err := unix.Close(p.fd)
	p.fd = -1
	return err
}

// Of reads the credentials of the process on the other end of conn (a
// Unix socket connection, or a wrapper exposing its SyscallConn) and
// pins it: with SO_PEERPIDFD (Linux 6.5+) the kernel hands over a pidfd for
// the very process that connected; on older kernels it falls back to
// pidfd_open on the SO_PEERCRED PID. The caller closes Peer.Process.
func Of(conn syscall.Conn) (Peer, error) {
	raw, err := conn.SyscallConn()
	if err != nil {
		return Peer{}, &Error{Reason: ReasonPeerCred, Err: err}
	}
	var (
		cred     *unix.Ucred
		pidfd    = -1
		credErr  error
		pidfdErr error
	)
	ctrlErr := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
		if credErr == nil {
			pidfd, pidfdErr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PEERPIDFD)
		}
	})
	if err := errors.Join(ctrlErr, credErr); err != nil {
		return Peer{}, &Error{Reason: ReasonPeerCred, Err: fmt.Errorf("SO_PEERCRED: %w", err)}
	}
	if cred.Pid <= 0 {
		return Peer{}, &Error{Reason: ReasonPeerCred, Err: errors.New("peer has no PID in this PID namespace")}
	}
	peer := Peer{PID: int(cred.Pid), UID: cred.Uid, GID: cred.Gid}
	if pidfdErr == nil && pidfd >= 0 {
		peer.Process = &Process{pid: peer.PID, fd: pidfd}
		return peer, nil
	}
	proc, err := Pin(peer.PID)
	if err != nil {
		return Peer{}, err
	}
	peer.Process = proc
	return peer, nil
}
