package endpoints

import (
	"net"
	"sync"
)

// limitListener accepts at most n connections at once; further connections
// wait in the kernel's backlog. Unlike netutil.LimitListener it hands out
// connections that still expose the Unix socket (SyscallConn), which
// attestation needs.
type limitListener struct {
	*net.UnixListener
	sem chan struct{}
}

func newLimitListener(l *net.UnixListener, n int) *limitListener {
	return &limitListener{UnixListener: l, sem: make(chan struct{}, n)}
}

// Accept waits for a free slot, then for a connection.
func (l *limitListener) Accept() (net.Conn, error) {
	l.sem <- struct{}{}
	c, err := l.AcceptUnix()
	if err != nil {
		<-l.sem
		return nil, err
	}
	return &limitedConn{UnixConn: c, release: func() { <-l.sem }}, nil
}

// limitedConn frees its listener slot when closed.
type limitedConn struct {
	*net.UnixConn
	once    sync.Once
	release func()
}

func (c *limitedConn) Close() error {
	err := c.UnixConn.Close()
	c.once.Do(c.release)
	return err
}
