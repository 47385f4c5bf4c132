package attest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

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
// executable and credentials (BindsProcess), also while the process runs
// the executable it ran when bound, with the effective uid and gid it
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
	scanner  *Scanner
	process  bool // check executable and credentials too
	unwatch  func()

	mu          sync.Mutex
	fd          int // a descriptor of the process for ino
	inheritable bool
	exe         [2]uint64 // device, inode
	err         error
}

// bind identifies the client's socket of conn, finds it in peer's
// descriptor table, records the executable, and checks that no process
// other than peer held it in a scan started at or after accepted.
func bind(ctx context.Context, conn syscall.Conn, peer Peer, s *Scanner, process bool, accepted time.Time) (*Binding, error) {
	raw, err := conn.SyscallConn()
	if err != nil {
		return nil, &Error{Reason: ReasonPeerSocket, Err: err}
	}
	var ino uint64
	var inoErr error
	if err := raw.Control(func(fd uintptr) { ino, inoErr = peerInode(int(fd)) }); err != nil || inoErr != nil {
		return nil, &Error{Reason: ReasonPeerSocket, Err: fmt.Errorf("identify the client's socket: %w", errors.Join(err, inoErr))}
	}
	b := &Binding{peer: peer, ino: ino, procRoot: s.procRoot, scanner: s, process: process, unwatch: s.Watch(ino)}
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
	fds, err := processFDs(b.procRoot, b.peer.PID, b.ino)
	if err != nil {
		return b.procError(err)
	}
	if len(fds) == 0 {
		return b.notHolder()
	}
	b.fd = fds[0]
	for _, fd := range fds {
		flags, _, err := readFDInfo(b.procRoot, b.peer.PID, fd)
		if err != nil {
			return b.procError(err)
		}
		if flags&unix.O_CLOEXEC == 0 {
			b.inheritable = true
		}
	}
	if b.exe, err = exeID(b.procRoot, b.peer.PID); err != nil {
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
	if _, ino, err := readFDInfo(b.procRoot, b.peer.PID, b.fd); err == nil && ino == b.ino {
		return nil
	}
	fds, err := processFDs(b.procRoot, b.peer.PID, b.ino)
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
	exe, err := exeID(b.procRoot, b.peer.PID)
	if err != nil {
		return b.procError(err)
	}
	if exe != b.exe {
		return &Error{Reason: ReasonExecuted, Err: fmt.Errorf(
			"process %d runs another executable than when it was attested (it called execve); the new program must open its own connection", b.peer.PID)}
	}
	uid, gid, err := effectiveIDs(b.procRoot, b.peer.PID)
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
			fds, err := processFDs(b.procRoot, pid, b.ino)
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

// processFDs returns the descriptors through which process pid holds socket
// ino: in its own table, or else in the tables of its threads (a thread may
// have unshared its table, or the leader may have exited).
func processFDs(procRoot string, pid int, ino uint64) ([]int, error) {
	var fds []int
	collect := func(fd int, i uint64) {
		if i == ino {
			fds = append(fds, fd)
		}
	}
	dir := procRoot + "/" + strconv.Itoa(pid)
	if err := scanFDs(dir+"/fd", collect); err != nil || len(fds) > 0 {
		return fds, err
	}
	tasks, err := os.ReadDir(dir + "/task")
	if err != nil {
		if gone(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("read threads of process %d: %w", pid, err)
	}
	for _, t := range tasks {
		if err := scanFDs(dir+"/task/"+t.Name()+"/fd", collect); err != nil {
			return nil, err
		}
	}
	return fds, nil
}

// readFDInfo returns the flags and inode of descriptor fd of process pid.
func readFDInfo(procRoot string, pid, fd int) (flags int, ino uint64, err error) {
	data, err := readProc(procRoot + "/" + strconv.Itoa(pid) + "/fdinfo/" + strconv.Itoa(fd))
	if err != nil {
		return 0, 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		k, v, ok := bytes.Cut(sc.Bytes(), []byte(":"))
		if !ok {
			continue
		}
		v = bytes.TrimSpace(v)
		switch string(k) {
		case "flags":
			f, err := strconv.ParseInt(string(v), 8, 64)
			if err != nil {
				return 0, 0, fmt.Errorf("fdinfo %d/%d flags %q: %w", pid, fd, v, err)
			}
			flags = int(f)
		case "ino":
			if ino, err = strconv.ParseUint(string(v), 10, 64); err != nil {
				return 0, 0, fmt.Errorf("fdinfo %d/%d ino %q: %w", pid, fd, v, err)
			}
		}
	}
	return flags, ino, nil
}

// exeID returns the device and inode of the executable process pid runs.
func exeID(procRoot string, pid int) ([2]uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(procRoot+"/"+strconv.Itoa(pid)+"/exe", &st); err != nil {
		return [2]uint64{}, fmt.Errorf("stat executable of process %d: %w", pid, err)
	}
	return [2]uint64{st.Dev, st.Ino}, nil
}

// effectiveIDs returns the effective uid and gid of process pid.
func effectiveIDs(procRoot string, pid int) (uid, gid uint32, err error) {
	data, err := readProc(procRoot + "/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, 0, fmt.Errorf("read status of process %d: %w", pid, err)
	}
	field := func(name string) (uint32, error) {
		i := bytes.Index(data, []byte("\n"+name+":"))
		if i < 0 {
			return 0, fmt.Errorf("status of process %d has no %s line", pid, name)
		}
		line, _, _ := bytes.Cut(data[i+len(name)+2:], []byte("\n"))
		f := bytes.Fields(line)
		if len(f) < 2 {
			return 0, fmt.Errorf("status of process %d: malformed %s line", pid, name)
		}
		v, err := strconv.ParseUint(string(f[1]), 10, 32)
		return uint32(v), err
	}
	if uid, err = field("Uid"); err != nil {
		return 0, 0, err
	}
	gid, err = field("Gid")
	return uid, gid, err
}
