package peer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/castellan-dev/castellan/agent/attest/procfs"
	"golang.org/x/sys/unix"
)

// Reasons a binding check fails (see Binding).
const (
	ReasonPeerSocket = "peer_socket"     // the client's socket could not be identified
	ReasonShared     = "shared"          // another process holds the connection too
	ReasonNotHolder  = "not_holder"      // the attested process does not hold the connection
	ReasonExecuted   = "executed"        // the attested process runs another executable now
	ReasonCreds      = "credentials"     // the attested process's uid/gid changed since connect
	ReasonProcRead   = "proc_unreadable" // /proc could not be read to check the holder
)

// Binding ties an attested process to the connection it attested on. It
// holds while the pinned process is alive, holds the client's end of the
// connection in its descriptor table, and no other process's descriptor
// table holds it; for attestors whose selectors come from the process's
// executable and credentials (attest.BindsProcess), also while the process
// runs the executable it ran when bound, with the effective uid and gid it
// connected with (SO_PEERCRED). A failed check is final for the connection.
//
// Threads of the attested process are the process; processes that share its
// descriptor table (clone with CLONE_FILES but not CLONE_THREAD) are other
// holders. A child that holds the connection only between fork and execve
// (as every Go program's children briefly do) is given 40 ms to drop it.
// Between a check and the response it guards, a process can still take the
// connection if the attested process gives it away; the next check refuses
// the connection for good.
type Binding struct {
	peer     Peer
	ino      uint64 // the client's socket
	procRoot string
	scanner  *procfs.Scanner
	process  bool // check executable and credentials too
	unwatch  func()

	mu          sync.Mutex
	fd          int // a descriptor of the process for ino
	inheritable bool
	exe         [2]uint64 // device, inode
	err         error
}

// Bind identifies the client's socket of conn, finds it in p's descriptor
// table, records the executable, and checks that no process other than p
// held it in a scan by s started at or after accepted. With process set
// (for attestors whose selectors come from the executable and the
// credentials) the binding also checks that neither changed.
func Bind(ctx context.Context, conn syscall.Conn, p Peer, s *procfs.Scanner, process bool, accepted time.Time) (*Binding, error) {
	raw, err := conn.SyscallConn()
	if err != nil {
		return nil, &Error{Reason: ReasonPeerSocket, Err: err}
	}
	var ino uint64
	var inoErr error
	if err := raw.Control(func(fd uintptr) { ino, inoErr = peerInode(int(fd)) }); err != nil || inoErr != nil {
		return nil, &Error{Reason: ReasonPeerSocket, Err: fmt.Errorf("identify the client's socket: %w", errors.Join(err, inoErr))}
	}
	b := &Binding{peer: p, ino: ino, procRoot: s.ProcRoot(), scanner: s, process: process, unwatch: s.Watch(ino)}
	if err := b.locate(); err != nil {
		b.Close()
		return nil, err
	}
	if err := b.Check(ctx, accepted); err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

// locate finds the process's descriptors for the socket and records
// whether any survives an exec, and the executable.
func (b *Binding) locate() error {
	fds, err := procfs.SocketFDs(b.procRoot, b.peer.PID, b.ino)
	if err != nil {
		return b.procError(err)
	}
	if len(fds) == 0 {
		return b.notHolder()
	}
	b.fd = fds[0]
	for _, fd := range fds {
		flags, _, err := procfs.FDInfo(b.procRoot, b.peer.PID, fd)
		if err != nil {
			return b.procError(err)
		}
		if flags&unix.O_CLOEXEC == 0 {
			b.inheritable = true
		}
	}
	if b.exe, err = procfs.ExeID(b.procRoot, b.peer.PID); err != nil {
		return b.procError(err)
	}
	return nil
}

// Inheritable reports whether the process holds the connection through a
// descriptor that is not close-on-exec. Such a descriptor may have been
// inherited across an execve from the program that connected, so the
// executable the process runs now need not be the one that connected.
func (b *Binding) Inheritable() bool { return b.inheritable }

// Check verifies the binding, using a holder scan started at or after
// notBefore. It returns an *Error saying why it fails; once it has failed
// it keeps failing.
func (b *Binding) Check(ctx context.Context, notBefore time.Time) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err != nil {
		return b.err
	}
	err := b.check(ctx, notBefore)
	if ctx.Err() != nil && err != nil {
		return err // the caller gave up; the connection is not at fault
	}
	b.err = err
	return err
}

func (b *Binding) check(ctx context.Context, notBefore time.Time) error {
	if err := b.peer.Process.Alive(); err != nil {
		return err
	}
	if err := b.stillHolds(); err != nil {
		return err
	}
	if b.process {
		if err := b.sameProcess(); err != nil {
			return err
		}
	}
	holders, err := b.scanner.Holders(ctx, b.ino, notBefore)
	if err != nil {
		return b.procError(err)
	}
	if others := b.others(ctx, holders); len(others) > 0 && ctx.Err() == nil {
		return &Error{Reason: ReasonShared, Err: fmt.Errorf(
			"the connection is held by more than one process: besides the attested process %d, process %v holds it; a connection to the agent must not be shared or handed on, each process must open its own",
			b.peer.PID, others)}
	}
	// The process could have exited and its descriptors gone to a
	// reused PID between the reads above; alive now proves they were its.
	return b.peer.Process.Alive()
}

// stillHolds checks, cheaply, that the process still holds the socket: the
// descriptor found last time, or else any descriptor.
func (b *Binding) stillHolds() error {
	if _, ino, err := procfs.FDInfo(b.procRoot, b.peer.PID, b.fd); err == nil && ino == b.ino {
		return nil
	}
	fds, err := procfs.SocketFDs(b.procRoot, b.peer.PID, b.ino)
	if err != nil {
		return b.procError(err)
	}
	if len(fds) == 0 {
		return b.notHolder()
	}
	b.fd = fds[0]
	return nil
}

// sameProcess checks the executable and the effective credentials.
func (b *Binding) sameProcess() error {
	exe, err := procfs.ExeID(b.procRoot, b.peer.PID)
	if err != nil {
		return b.procError(err)
	}
	if exe != b.exe {
		return &Error{Reason: ReasonExecuted, Err: fmt.Errorf(
			"process %d runs another executable than when it was attested (it called execve); the new program must open its own connection", b.peer.PID)}
	}
	uid, gid, err := procfs.EffectiveIDs(b.procRoot, b.peer.PID)
	if err != nil {
		return b.procError(err)
	}
	if uid != b.peer.UID || gid != b.peer.GID {
		return &Error{Reason: ReasonCreds, Err: fmt.Errorf(
			"process %d now runs as uid %d gid %d, not as uid %d gid %d as when it connected; the identity is bound to the credentials at connect time, reconnect after changing them",
			b.peer.PID, uid, gid, b.peer.UID, b.peer.GID)}
	}
	return nil
}

// others returns the holders other than the attested process that still
// hold the socket after a short grace (40 ms in all): a process that forks
// to run a program holds copies of every descriptor until its exec closes
// the close-on-exec ones, and that must not refuse its parent.
func (b *Binding) others(ctx context.Context, holders []int) []int {
	others := slices.DeleteFunc(slices.Clone(holders), func(pid int) bool { return pid == b.peer.PID })
	for _, d := range [...]time.Duration{2 * time.Millisecond, 8 * time.Millisecond, 30 * time.Millisecond} {
		if len(others) == 0 {
			return nil
		}
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return others
		case <-t.C:
		}
		others = slices.DeleteFunc(others, func(pid int) bool {
			fds, err := procfs.SocketFDs(b.procRoot, pid, b.ino)
			return err == nil && len(fds) == 0
		})
	}
	return others
}

func (b *Binding) notHolder() error {
	return &Error{Reason: ReasonNotHolder, Err: fmt.Errorf(
		"the attested process %d no longer holds this connection (it handed it on or closed it); connect from the process that uses the connection", b.peer.PID)}
}

func (b *Binding) procError(err error) error {
	if alive := b.peer.Process.Alive(); alive != nil {
		return alive
	}
	var ae *Error
	if errors.As(err, &ae) {
		return err
	}
	return &Error{Reason: ReasonProcRead, Err: err}
}

// Close stops watching the socket.
func (b *Binding) Close() { b.unwatch() }
