package endpoints

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/castellan-dev/castellan/agent/attest"
	"github.com/castellan-dev/castellan/agent/attest/k8sattest"
)

// Limits bound what one caller may hold on the socket, so that no local user
// (or pod) can lock the others out. A caller is a uid or, with ByPod, the
// pod a process runs in (processes outside pods are still callers by uid).
// Zero fields take the defaults below.
type Limits struct {
	// MaxConns bounds all open connections (DefaultMaxConns).
	MaxConns int
	// MaxConnsPerCaller bounds one caller's open connections
	// (DefaultMaxConnsPerCaller).
	MaxConnsPerCaller int
	// MaxStreamsPerCaller bounds one caller's open calls, over all its
	// connections (DefaultMaxStreamsPerCaller).
	MaxStreamsPerCaller int
	// IdleTimeout closes a connection that has had no open call for this
	// long, including one that never made a call (DefaultIdleTimeout).
	IdleTimeout time.Duration
	// ByPod counts processes in Kubernetes pods per pod (by the pod UID in
	// their cgroup) instead of per uid: pods often share a uid.
	ByPod bool
}

// Default limits.
const (
	DefaultMaxConns            = 4096
	DefaultMaxConnsPerCaller   = 64
	DefaultMaxStreamsPerCaller = 256
	DefaultIdleTimeout         = 10 * time.Second
)

// refusedTotal is the refusal reason when all connections are taken; the
// others are connections_per_uid, connections_per_pod, streams_per_uid and
// streams_per_pod.
const refusedTotal = "connections_total"

func (l Limits) withDefaults() Limits {
	if l.MaxConns <= 0 {
		l.MaxConns = DefaultMaxConns
	}
	if l.MaxConnsPerCaller <= 0 {
		l.MaxConnsPerCaller = DefaultMaxConnsPerCaller
	}
	if l.MaxStreamsPerCaller <= 0 {
		l.MaxStreamsPerCaller = DefaultMaxStreamsPerCaller
	}
	if l.IdleTimeout <= 0 {
		l.IdleTimeout = DefaultIdleTimeout
	}
	return l
}

// caller identifies whom a connection counts against.
type caller struct {
	kind string // "uid" or "pod"
	id   string
}

func (c caller) String() string { return c.kind + " " + c.id }

// limiter counts connections and streams per caller. Accept never blocks on
// a limit: a connection over one is closed at once, so one caller's flood
// never delays another caller's connection in the kernel's backlog.
type limiter struct {
	lim      Limits
	procRoot string
	m        *metrics
	log      *slog.Logger

	mu      sync.Mutex
	total   int
	conns   map[caller]int
	streams map[caller]int
}

func newLimiter(lim Limits, m *metrics, log *slog.Logger) *limiter {
	return &limiter{lim: lim.withDefaults(), procRoot: "/proc", m: m, log: log,
		conns: map[caller]int{}, streams: map[caller]int{}}
}

// listener wraps l so that every accepted connection is counted.
func (lm *limiter) listener(l *net.UnixListener) net.Listener {
	return &limitListener{UnixListener: l, lm: lm}
}

// limitListener hands out connections that still expose the Unix socket
// (SyscallConn), which attestation needs.
type limitListener struct {
	*net.UnixListener
	lm *limiter
}

// Accept returns the next connection within the limits, closing those
// over them.
func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.AcceptUnix()
		if err != nil {
			return nil, err
		}
		if lc := l.lm.admit(c); lc != nil {
			return lc, nil
		}
	}
}

// admit counts c against its caller, or closes it and returns nil.
func (lm *limiter) admit(c *net.UnixConn) *limitedConn {
	who, err := lm.callerOf(c)
	if err != nil {
		lm.log.Debug("endpoints: connection without peer credentials closed", "error", err.Error())
		_ = c.Close()
		return nil
	}
	lm.mu.Lock()
	reason := ""
	switch {
	case lm.total >= lm.lim.MaxConns:
		reason = refusedTotal
	case lm.conns[who] >= lm.lim.MaxConnsPerCaller:
		reason = "connections_per_" + who.kind
	default:
		lm.total++
		lm.conns[who]++
	}
	lm.mu.Unlock()
	if reason != "" {
		lm.m.refusals.WithLabelValues(reason).Inc()
		lm.log.Debug("endpoints: connection refused by limit", "caller", who.String(), "reason", reason)
		_ = c.Close()
		return nil
	}
	lc := &limitedConn{UnixConn: c, lm: lm, who: who}
	lc.idle = time.AfterFunc(lm.lim.IdleTimeout, lc.closeIfIdle)
	return lc
}

// callerOf returns whom c counts against: its pod with ByPod when the
// process runs in one, else its uid (SO_PEERCRED).
func (lm *limiter) callerOf(c *net.UnixConn) (caller, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return caller{}, err
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil || credErr != nil {
		return caller{}, errors.Join(err, credErr)
	}
	if lm.lim.ByPod && cred.Pid > 0 {
		if pc, err := k8sattest.ReadCgroups(lm.procRoot, int(cred.Pid)); err == nil {
			return caller{kind: "pod", id: pc.PodUID}, nil
		}
	}
	return caller{kind: "uid", id: strconv.FormatUint(uint64(cred.Uid), 10)}, nil
}

// release uncounts a closed connection.
func (lm *limiter) release(who caller) {
	lm.mu.Lock()
	defer lm.mu.Unlock()
	lm.total--
	if lm.conns[who]--; lm.conns[who] <= 0 {
		delete(lm.conns, who)
	}
}

// limitedConn is a counted connection. It is closed after IdleTimeout
// without an open call, and uncounted when closed.
type limitedConn struct {
	*net.UnixConn
	lm  *limiter
	who caller

	mu     sync.Mutex
	active int
	closed bool
	idle   *time.Timer
}

func (c *limitedConn) Close() error {
	c.mu.Lock()
	first := !c.closed
	c.closed = true
	c.idle.Stop()
	c.mu.Unlock()
	err := c.UnixConn.Close()
	if first {
		c.lm.release(c.who)
	}
	return err
}

func (c *limitedConn) closeIfIdle() {
	c.mu.Lock()
	idle := c.active == 0 && !c.closed
	c.mu.Unlock()
	if idle {
		c.lm.m.idleClosed.Inc()
		_ = c.Close()
	}
}

// beginStream counts a call against the connection's caller, or returns the
// ResourceExhausted error to refuse it with.
func (lm *limiter) beginStream(c *limitedConn) error {
	lm.mu.Lock()
	if n := lm.streams[c.who]; n >= lm.lim.MaxStreamsPerCaller {
		lm.mu.Unlock()
		lm.m.refusals.WithLabelValues("streams_per_" + c.who.kind).Inc()
		return status.Errorf(codes.ResourceExhausted,
			"endpoints: %s already has %d calls open on this agent (limit %d); close calls it does not use (one SDS or Workload API stream per process is enough)",
			c.who, n, lm.lim.MaxStreamsPerCaller)
	}
	lm.streams[c.who]++
	lm.mu.Unlock()
	c.mu.Lock()
	c.active++
	c.idle.Stop()
	c.mu.Unlock()
	return nil
}

func (lm *limiter) endStream(c *limitedConn) {
	lm.mu.Lock()
	if lm.streams[c.who]--; lm.streams[c.who] <= 0 {
		delete(lm.streams, c.who)
	}
	lm.mu.Unlock()
	c.mu.Lock()
	if c.active--; c.active == 0 && !c.closed {
		c.idle.Reset(lm.lim.IdleTimeout)
	}
	c.mu.Unlock()
}

// connOf returns the counted connection a call arrived on, if any.
func connOf(ctx context.Context) *limitedConn {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil
	}
	info, ok := p.AuthInfo.(*attest.AuthInfo)
	if !ok {
		return nil
	}
	c, _ := info.Conn.(*limitedConn)
	return c
}

// streamInterceptor applies the per-caller call limit to streams.
func (lm *limiter) streamInterceptor(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	c := connOf(ss.Context())
	if c == nil {
		return h(srv, ss)
	}
	if err := lm.beginStream(c); err != nil {
		return err
	}
	defer lm.endStream(c)
	return h(srv, ss)
}

// unaryInterceptor applies the per-caller call limit to unary calls.
func (lm *limiter) unaryInterceptor(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	c := connOf(ctx)
	if c == nil {
		return h(ctx, req)
	}
	if err := lm.beginStream(c); err != nil {
		return nil, err
	}
	defer lm.endStream(c)
	return h(ctx, req)
}

// String describes the limits for logs.
func (l Limits) String() string {
	by := "uid"
	if l.ByPod {
		by = "pod (uid outside pods)"
	}
	return fmt.Sprintf("per %s: %d connections, %d calls; %d connections in all; idle connections closed after %s",
		by, l.MaxConnsPerCaller, l.MaxStreamsPerCaller, l.MaxConns, l.IdleTimeout)
}
