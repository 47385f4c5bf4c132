// Package adminsock is the CA's owner-only admin socket: a Unix socket
// in an owner-only directory whose listener serves only connections from
// processes of the same user, or root (checked with SO_PEERCRED).
package adminsock

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Listen listens on the Unix socket at path for the admin API.
// The socket's directory must exist and be accessible only to its owner
// (mode 0700, e.g. the data directory); a stale socket file is replaced;
// the socket is mode 0600. Every accepted connection is checked with
// SO_PEERCRED: only processes running as this process's user, or root, are
// served; others are logged and closed.
func Listen(path string, log *slog.Logger) (net.Listener, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dir := filepath.Dir(path)
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("server: admin socket directory: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("server: admin socket directory %s has mode %#o; it must be owner-only: chmod 700 %s", dir, fi.Mode().Perm(), dir)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("server: remove stale admin socket: %w", err)
	}
	old := unix.Umask(0o177)
	l, err := net.Listen("unix", path)
	unix.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("server: listen on admin socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("server: chmod admin socket: %w", err)
	}
	return &peerCredListener{Listener: l, uid: uint32(os.Getuid()), allowRoot: true, log: log}, nil
}

// peerCredListener accepts only connections from processes running as uid
// (or as root, when allowRoot is set).
type peerCredListener struct {
	net.Listener
	uid       uint32
	allowRoot bool
	log       *slog.Logger
}

// Accept returns the next connection from an allowed user.
func (l *peerCredListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		uid, err := peerUID(c)
		if err == nil && (uid == l.uid || (l.allowRoot && uid == 0)) {
			return c, nil
		}
		l.log.Warn("admin socket connection refused", "peer_uid", uid, "error", fmt.Sprint(err))
		c.Close()
	}
}

// peerUID returns the user ID of the process on the other end of c.
func peerUID(c net.Conn) (uint32, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return 0, errors.New("server: not a Unix connection")
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *unix.Ucred
	var serr error
	if err := raw.Control(func(fd uintptr) {
		cred, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, err
	}
	if serr != nil {
		return 0, fmt.Errorf("server: SO_PEERCRED: %w", serr)
	}
	return cred.Uid, nil
}
