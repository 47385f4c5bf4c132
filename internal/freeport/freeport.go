// Package freeport hands tests loopback TCP ports that no other test holds.
//
// Asking the kernel for port 0 and closing the listener is not enough when a
// test must pass a port to another process (a server restarted on the same
// address, a kube-apiserver told where to listen): the kernel hands the same
// ephemeral ports to the next caller and to outgoing connections, and two
// test processes running side by side collide. This package instead picks
// ports outside the kernel's ephemeral range, so no outgoing connection takes
// them, and claims each one with an flock on a file under the system temp
// directory, held by a raw descriptor until the process exits, so no other
// test process on the machine, nor a later call in this one, is handed it.
package freeport

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// maxTries bounds the random probes of one call.
const maxTries = 2000

// Port returns a loopback TCP port that nothing listens on and that no other
// caller on this machine was handed while this process lives.
func Port() (int, error) {
	p, err := Range(1)
	if err != nil {
		return 0, err
	}
	return p, nil
}

// Addr returns "127.0.0.1:port" for a port from Port.
func Addr() (string, error) {
	p, err := Port()
	if err != nil {
		return "", err
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(p)), nil
}

// Range returns the first of n consecutive ports, each as Port promises.
func Range(n int) (int, error) {
	if n < 1 {
		return 0, fmt.Errorf("freeport: %d ports asked for", n)
	}
	lo, hi := candidates()
	if hi-lo < n {
		return 0, fmt.Errorf("freeport: no room for %d ports in [%d, %d)", n, lo, hi)
	}
	dir := filepath.Join(os.TempDir(), "castellan-freeport")
	if err := os.MkdirAll(dir, 0o1777); err != nil {
		return 0, fmt.Errorf("freeport: %w", err)
	}
	for range maxTries {
		base := lo + rand.N(hi-lo-n+1)
		if claimAll(dir, base, n) {
			return base, nil
		}
	}
	return 0, fmt.Errorf("freeport: no %d free consecutive ports found in [%d, %d) after %d tries", n, lo, hi, maxTries)
}

// candidates is the port range searched: below the ephemeral range when
// there is room, else above it.
func candidates() (lo, hi int) {
	elo, ehi := 32768, 60999
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		f := strings.Fields(string(b))
		if len(f) == 2 {
			a, errA := strconv.Atoi(f[0])
			b, errB := strconv.Atoi(f[1])
			if errA == nil && errB == nil && a <= b {
				elo, ehi = a, b
			}
		}
	}
	if elo-10000 >= 4096 {
		return 10000, elo
	}
	return ehi + 1, 65536
}

// claimAll claims ports base..base+n-1 or none of them. A claimed port is
// locked for good; one that turned out busy is released.
func claimAll(dir string, base, n int) bool {
	var fds []int
	for i := range n {
		fd, ok := claim(dir, base+i)
		if !ok {
			for _, f := range fds {
				_ = syscall.Close(f)
			}
			return false
		}
		fds = append(fds, fd)
	}
	return true // the descriptors stay open: they are the claim
}

// claim locks the port's file and checks that nothing listens on the port.
func claim(dir string, port int) (int, bool) {
	name := filepath.Join(dir, strconv.Itoa(port))
	fd, err := syscall.Open(name, syscall.O_CREAT|syscall.O_RDWR|syscall.O_CLOEXEC, 0o666)
	if err != nil {
		return 0, false
	}
	if err := syscall.Flock(fd, syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = syscall.Close(fd)
		return 0, false
	}
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		_ = syscall.Close(fd)
		return 0, false
	}
	if err := l.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		_ = syscall.Close(fd)
		return 0, false
	}
	return fd, true
}
