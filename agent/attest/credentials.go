package attest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/castellan-dev/castellan/agent/attest/peer"
	"github.com/castellan-dev/castellan/agent/attest/procfs"
	"github.com/castellan-dev/castellan/agent/state"
	"google.golang.org/grpc/credentials"
	grpcpeer "google.golang.org/grpc/peer"
)

// SecurityProtocol names the attestation in gRPC's ProtocolInfo.
const SecurityProtocol = "castellan-unix-attest"

// AuthInfo is the attestation bound to one connection, found in the gRPC
// peer of every call made on it.
type AuthInfo struct {
	credentials.CommonAuthInfo
	// Peer is the attested process.
	Peer peer.Peer
	// Selectors are the attested selectors; empty if Err is set.
	Selectors []state.Selector
	// Err is why attestation failed, nil if it succeeded.
	Err error
	// Conn is the connection as the listener accepted it.
	Conn net.Conn

	onFailure func(reason string)
	maxAge    time.Duration
	now       func() time.Time
	attestor  Attestor
}

// check re-checks the binding with a scan no older than maxAge.
func (i *AuthInfo) check(ctx context.Context) error {
	if err := i.Peer.Process.Alive(); err != nil || i.Peer.Binding == nil {
		return err
	}
	return i.Peer.Binding.Check(ctx, i.now().Add(-i.maxAge))
}

// AuthType implements credentials.AuthInfo.
func (*AuthInfo) AuthType() string { return SecurityProtocol }

// Credentials attest the peer of every accepted Unix connection once, at
// handshake time, and bind the result to the connection (see peer.Binding): the
// attestation holds only while the attested process is the sole holder of
// the connection, and FromContext checks that again on every call. An
// attestation failure does not refuse the connection: calls on it fail with
// the reason (see FromContext), which tells the workload more than a closed
// socket.
type Credentials struct {
	attestor  Attestor
	timeout   time.Duration
	onFailure func(reason string)
	scanner   *procfs.Scanner
	maxAge    time.Duration
	now       func() time.Time
}

// DefaultHolderMaxAge is how old the descriptor scan behind a per-call
// holder check may be (the attested process's own descriptor, executable
// and credentials are read on every call).
const DefaultHolderMaxAge = time.Second

// DefaultAttestTimeout bounds one attestation at handshake (long enough to
// hash a large executable the first time) when CredentialsConfig.Timeout is
// zero.
const DefaultAttestTimeout = 4 * time.Second

// CredentialsConfig configures NewCredentials; its zero value is the
// defaults.
type CredentialsConfig struct {
	// Timeout bounds one attestation at handshake (0: DefaultAttestTimeout).
	Timeout time.Duration
	// OnFailure, if not nil, is called with the reason of every failed
	// attestation, at handshake or when FromContext finds the binding
	// broken.
	OnFailure func(reason string)
	// Scanner finds the holders of connections, with its /proc and clock
	// (nil: a scanner of /proc on the wall clock).
	Scanner *procfs.Scanner
	// HolderMaxAge is how old a descriptor scan may be for a per-call
	// check (0: DefaultHolderMaxAge; negative: scan for every call).
	HolderMaxAge time.Duration
}

// NewCredentials returns server-side transport credentials that attest with
// a, as cfg says.
func NewCredentials(a Attestor, cfg CredentialsConfig) *Credentials {
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultAttestTimeout
	}
	if cfg.OnFailure == nil {
		cfg.OnFailure = func(string) {}
	}
	if cfg.Scanner == nil {
		cfg.Scanner = procfs.NewScanner(procfs.ScannerConfig{})
	}
	switch {
	case cfg.HolderMaxAge == 0:
		cfg.HolderMaxAge = DefaultHolderMaxAge
	case cfg.HolderMaxAge < 0:
		cfg.HolderMaxAge = 0
	}
	return &Credentials{attestor: a, timeout: cfg.Timeout, onFailure: cfg.OnFailure, scanner: cfg.Scanner,
		maxAge: cfg.HolderMaxAge, now: cfg.Scanner.Now}
}

// BindsProcess is implemented by attestors whose selectors derive from the
// process's executable and credentials; their bindings also check that
// these did not change (see peer.Binding).
type BindsProcess interface {
	BindsProcess() bool
}

// ServerHandshake pins, binds and attests the peer of raw, which must be a
// Unix connection (or wrap one and expose its SyscallConn).
func (c *Credentials) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	accepted := c.now()
	info := &AuthInfo{
		CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity},
		Conn:           raw,
		onFailure:      c.onFailure,
		maxAge:         c.maxAge,
		now:            c.now,
		attestor:       c.attestor,
	}
	sc, ok := raw.(syscall.Conn)
	if !ok || raw.LocalAddr().Network() != "unix" {
		return nil, nil, fmt.Errorf("attest: connection from %s is not a Unix socket", raw.RemoteAddr())
	}
	p, err := peer.Of(sc)
	if err != nil {
		info.Err = err
		c.onFailure(peer.ReasonOf(err))
		return raw, info, nil
	}
	info.Peer = p
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	info.Selectors, info.Err = c.attest(ctx, sc, &info.Peer, accepted)
	if info.Err != nil {
		c.onFailure(peer.ReasonOf(info.Err))
	}
	return &pinnedConn{Conn: raw, peer: info.Peer}, info, nil
}

// attest binds the connection to the peer, attests the peer, and checks the
// binding again, so that what the attestor read belongs to the process
// that holds the connection.
func (c *Credentials) attest(ctx context.Context, sc syscall.Conn, p *peer.Peer, accepted time.Time) ([]state.Selector, error) {
	bp, ok := c.attestor.(BindsProcess)
	b, err := peer.Bind(ctx, sc, *p, c.scanner, ok && bp.BindsProcess(), accepted)
	if err != nil {
		return nil, err
	}
	p.Binding = b
	sels, err := c.attestor.Attest(ctx, *p)
	if err != nil {
		return nil, err
	}
	if err := b.Check(ctx, accepted); err != nil {
		return nil, err
	}
	return sels, nil
}

// ClientHandshake is not supported: these credentials are server-side only.
func (c *Credentials) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("attest: credentials are for servers only")
}

// Info implements credentials.TransportCredentials.
func (c *Credentials) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: SecurityProtocol}
}

// Clone implements credentials.TransportCredentials.
func (c *Credentials) Clone() credentials.TransportCredentials {
	cp := *c
	return &cp
}

// OverrideServerName implements credentials.TransportCredentials.
func (c *Credentials) OverrideServerName(string) error { return nil }

// pinnedConn releases the pinned process and its binding when the
// connection closes.
type pinnedConn struct {
	net.Conn
	peer peer.Peer
	once sync.Once
}

func (c *pinnedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		if c.peer.Binding != nil {
			c.peer.Binding.Close()
		}
		if c.peer.Process != nil {
			_ = c.peer.Process.Close()
		}
	})
	return err
}

// FromContext returns the selectors of the caller of a gRPC call served with
// Credentials, after checking the connection's binding (see peer.Binding): the
// attested process is alive, still holds the connection, and no other
// process does. It returns an *Error saying why otherwise.
func FromContext(ctx context.Context) ([]state.Selector, error) {
	p, ok := grpcpeer.FromContext(ctx)
	if !ok {
		return nil, &peer.Error{Reason: peer.ReasonTransport, Err: errors.New("no peer on the call")}
	}
	info, ok := p.AuthInfo.(*AuthInfo)
	if !ok {
		return nil, &peer.Error{Reason: peer.ReasonTransport, Err: errors.New("connection was not attested (served without attest credentials)")}
	}
	if info.Err != nil {
		return nil, info.Err
	}
	if err := info.check(ctx); err != nil {
		if info.onFailure != nil {
			info.onFailure(peer.ReasonOf(err))
		}
		return nil, err
	}
	return info.Selectors, nil
}

// Explain returns why the caller's selectors may be fewer than a registration
// entry expects, for messages refusing a caller that matched no identity:
// the executable selectors withheld for a descriptor that is not
// close-on-exec (see unixattest.Attestor.Attest). It returns "" when there
// is nothing to add.
func Explain(ctx context.Context) string {
	p, ok := grpcpeer.FromContext(ctx)
	if !ok {
		return ""
	}
	info, ok := p.AuthInfo.(*AuthInfo)
	if !ok || info.Peer.Binding == nil || !info.Peer.Binding.Inheritable() {
		return ""
	}
	if bp, ok := info.attestor.(BindsProcess); !ok || !bp.BindsProcess() {
		return ""
	}
	return fmt.Sprintf("; unix:path and unix:sha256 were not attested because process %d holds this connection through a descriptor that is not close-on-exec, "+
		"so the program that connected may have replaced itself with execve: create the socket with SOCK_CLOEXEC, or register the workload by unix:uid/unix:gid", info.Peer.PID)
}
