package peer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"syscall"

	"golang.org/x/sys/unix"
)

// Values from linux/unix_diag.h, which golang.org/x/sys does not carry.
const (
	udiagShowPeer  = 0x4
	unixDiagPeer   = 2
	udiagReqLen    = 24
	udiagMsgLen    = 16
	diagNoCookie   = ^uint32(0)
	maxDiagReplyLn = 8 << 10
)

// peerInode returns the inode of the socket at the other end of the
// connected Unix socket fd (the client's socket, as it appears in the
// client's /proc/PID/fd), asked of the kernel through NETLINK_SOCK_DIAG.
// The accepted socket lives in the client's network namespace; if that is
// not the agent's, the query is made from inside it (which needs
// CAP_NET_ADMIN and CAP_SYS_ADMIN).
func peerInode(fd int) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return 0, fmt.Errorf("stat accepted socket: %w", err)
	}
	peer, err := diagPeer(uint32(st.Ino), -1)
	if !errors.Is(err, unix.ENOENT) {
		return peer, err
	}
	ns, nsErr := unix.IoctlRetInt(fd, unix.SIOCGSKNS)
	if nsErr != nil {
		return 0, fmt.Errorf("socket %d is in another network namespace and the agent cannot enter it (SIOCGSKNS: %w; grant CAP_NET_ADMIN)", st.Ino, nsErr)
	}
	defer unix.Close(ns)
	return diagPeer(uint32(st.Ino), ns)
}

// diagPeer asks sock_diag for the peer of socket ino, from network
// namespace ns (-1: the agent's own).
func diagPeer(ino uint32, ns int) (uint64, error) {
	nl, err := diagSocket(ns)
	if err != nil {
		return 0, err
	}
	defer unix.Close(nl)
	req := make([]byte, unix.NLMSG_HDRLEN+udiagReqLen)
	ne := binary.NativeEndian
	ne.PutUint32(req[0:], uint32(len(req)))
	ne.PutUint16(req[4:], unix.SOCK_DIAG_BY_FAMILY)
	ne.PutUint16(req[6:], unix.NLM_F_REQUEST)
	ne.PutUint32(req[8:], 1) // sequence
	r := req[unix.NLMSG_HDRLEN:]
	r[0] = unix.AF_UNIX
	ne.PutUint32(r[4:], ^uint32(0)) // every state
	ne.PutUint32(r[8:], ino)
	ne.PutUint32(r[12:], udiagShowPeer)
	ne.PutUint32(r[16:], diagNoCookie)
	ne.PutUint32(r[20:], diagNoCookie)
	if err := unix.Sendto(nl, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return 0, fmt.Errorf("sock_diag request: %w", err)
	}
	buf := make([]byte, maxDiagReplyLn)
	n, _, err := unix.Recvfrom(nl, buf, 0)
	if err != nil {
		return 0, fmt.Errorf("sock_diag reply: %w", err)
	}
	return parseDiagPeer(buf[:n], ino)
}

// diagSocket opens a NETLINK_SOCK_DIAG socket in namespace ns (-1: ours).
// A socket keeps the namespace it was created in, so only its creation
// happens inside ns, on a locked thread that is discarded if it cannot
// return to the agent's namespace.
func diagSocket(ns int) (int, error) {
	open := func() (int, error) {
		fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
		if err != nil {
			return -1, fmt.Errorf("open sock_diag socket: %w (is the unix_diag kernel module available?)", err)
		}
		return fd, nil
	}
	if ns < 0 {
		return open()
	}
	type result struct {
		fd  int
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked unless restored: the thread dies with the goroutine
		self, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			done <- result{-1, fmt.Errorf("open own network namespace: %w", err)}
			return
		}
		defer unix.Close(self)
		if err := unix.Setns(ns, unix.CLONE_NEWNET); err != nil {
			done <- result{-1, fmt.Errorf("enter the client's network namespace: %w (grant CAP_SYS_ADMIN, or run workloads in the agent's namespace)", err)}
			return
		}
		fd, err := open()
		if unix.Setns(self, unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		done <- result{fd, err}
	}()
	r := <-done
	return r.fd, r.err
}

// parseDiagPeer extracts UNIX_DIAG_PEER for socket ino from a sock_diag
// reply.
func parseDiagPeer(b []byte, ino uint32) (uint64, error) {
	msgs, err := syscall.ParseNetlinkMessage(b)
	if err != nil {
		return 0, fmt.Errorf("sock_diag reply: %w", err)
	}
	ne := binary.NativeEndian
	for _, m := range msgs {
		switch m.Header.Type {
		case unix.NLMSG_ERROR:
			if len(m.Data) >= 4 {
				if code := int32(ne.Uint32(m.Data)); code != 0 {
					return 0, fmt.Errorf("sock_diag socket %d: %w", ino, unix.Errno(-code))
				}
			}
			return 0, fmt.Errorf("sock_diag socket %d: malformed error", ino)
		case unix.SOCK_DIAG_BY_FAMILY:
			if len(m.Data) < udiagMsgLen || ne.Uint32(m.Data[4:]) != ino {
				continue
			}
			for a := m.Data[udiagMsgLen:]; len(a) >= 4; {
				l, t := int(ne.Uint16(a)), ne.Uint16(a[2:])
				if l < 4 || l > len(a) {
					break
				}
				if t == unixDiagPeer && l >= 8 {
					return uint64(ne.Uint32(a[4:])), nil
				}
				a = a[min(len(a), (l+3)&^3):]
			}
			return 0, fmt.Errorf("sock_diag socket %d: not connected (no peer)", ino)
		}
	}
	return 0, fmt.Errorf("sock_diag socket %d: no answer", ino)
}
