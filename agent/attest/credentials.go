package attest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"
	"time"

	"github.com/castellan-dev/castellan/agent/state"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// SecurityProtocol names the attestation in gRPC's ProtocolInfo.
const SecurityProtocol = "castellan-unix-attest"

// AuthInfo is the attestation bound to one connection, found in the gRPC
// peer of every call made on it.
type AuthInfo struct {
	credentials.CommonAuthInfo
	// Peer is the attested process.
	Peer Peer
	// Selectors are the attested selectors; empty if Err is set.
	Selectors []state.Selector
	// Err is why attestation failed, nil if it succeeded.
	Err error

	onFailure func(reason string)
}

// AuthType implements credentials.AuthInfo.
func (*AuthInfo) AuthType() string { return SecurityProtocol }

// Credentials attest the peer of every accepted Unix connection once, at
// handshake time, and bind the result to the connection. An attestation
// failure does not refuse the connection: calls on it fail with the reason
// (see FromContext), which tells the workload more than a closed socket.
type Credentials struct {
	attestor  Attestor
	timeout   time.Duration
	onFailure func(reason string)
}

// NewCredentials returns server-side transport credentials that attest with
// a. onFailure, if not nil, is called with the reason of every failed
// attestation, at handshake or when FromContext finds the process gone.
func NewCredentials(a Attestor, timeout time.Duration, onFailure func(reason string)) *Credentials {
	if onFailure == nil {
		onFailure = func(string) {}
	}
	return &Credentials{attestor: a, timeout: timeout, onFailure: onFailure}
}

// ServerHandshake pins and attests the peer of raw, which must be a Unix
// connection (or wrap one and expose its SyscallConn).
func (c *Credentials) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	info := &AuthInfo{
		CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity},
		onFailure:      c.onFailure,
	}
	sc, ok := raw.(syscall.Conn)
	if !ok || raw.LocalAddr().Network() != "unix" {
		return nil, nil, fmt.Errorf("attest: connection from %s is not a Unix socket", raw.RemoteAddr())
	}
	p, err := PeerOf(sc)
	if err != nil {
		info.Err = err
		c.onFailure(ReasonOf(err))
		return raw, info, nil
	}
	info.Peer = p
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	info.Selectors, info.Err = c.attestor.Attest(ctx, p)
	if info.Err != nil {
		c.onFailure(ReasonOf(info.Err))
	}
	return &pinnedConn{Conn: raw, proc: p.Process}, info, nil
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

// pinnedConn releases the pinned process when the connection closes.
type pinnedConn struct {
	net.Conn
	proc *Process
}

func (c *pinnedConn) Close() error {
	err := c.Conn.Close()
	if c.proc != nil {
		_ = c.proc.Close()
	}
	return err
}

// FromContext returns the selectors of the caller of a gRPC call served with
// Credentials, after checking that the attested process is still alive (so
// a connection handed to another process after its owner exited is
// refused). It returns an *Error saying why otherwise.
func FromContext(ctx context.Context) ([]state.Selector, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil, &Error{Reason: ReasonTransport, Err: errors.New("no peer on the call")}
	}
	info, ok := p.AuthInfo.(*AuthInfo)
	if !ok {
		return nil, &Error{Reason: ReasonTransport, Err: errors.New("connection was not attested (served without attest credentials)")}
	}
	if info.Err != nil {
		return nil, info.Err
	}
	if err := info.Peer.Process.Alive(); err != nil {
		if info.onFailure != nil {
			info.onFailure(ReasonOf(err))
		}
		return nil, err
	}
	return info.Selectors, nil
}
