package catest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	cav1 "github.com/castellan-dev/castellan/api/castellan/ca/v1"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// Replica is one server of a CA: its own listener and gRPC server over the
// CA's state (keys, join tokens, entries, revocations), shared with every
// other replica as CA replicas share one datastore. Tests stop a replica
// (every connection closes at once, as when its process is killed), make
// it fail calls, and count the calls that reached it.
type Replica struct {
	ca   *CA
	cert tls.Certificate

	mu         sync.Mutex
	addr       string
	srv        *grpc.Server
	health     *health.Server
	notServing bool
	failErr    error
	failLeft   int // calls still to fail with failErr; < 0: every call
	calls      int
}

// Serve starts another replica of ca on a fresh 127.0.0.1 port; it stops
// at the end of the test.
func (ca *CA) Serve(t testing.TB) *Replica {
	t.Helper()
	return ca.ServeAt(t, "")
}

// ServeAt starts another replica of ca listening on addr (host:port;
// empty means a fresh 127.0.0.1 port); it stops at the end of the test.
func (ca *CA) ServeAt(t testing.TB, addr string) *Replica {
	t.Helper()
	r := &Replica{ca: ca, cert: ca.serverCert, addr: addr}
	r.Start(t)
	return r
}

// Impostor starts a server that shares ca's state and is certified by ca's
// own intermediate, but presents an SVID for id instead of the CA's server
// ID: what a thief of any SVID of the trust domain could stand up. Agents
// must refuse it.
func (ca *CA) Impostor(t testing.TB, id spiffeid.ID) *Replica {
	t.Helper()
	key := newKey(t)
	leaf := ca.sign(t, id, key.Public(), time.Now(), time.Hour)
	r := &Replica{ca: ca, cert: tls.Certificate{Certificate: [][]byte{leaf.Raw, ca.inter.Raw}, PrivateKey: key, Leaf: leaf}}
	r.Start(t)
	return r
}

// Start serves the replica on 127.0.0.1 (on a fresh port the first time,
// on the same port after Stop) until Stop or the end of the test.
func (r *Replica) Start(t testing.TB) {
	t.Helper()
	r.mu.Lock()
	addr := r.addr
	r.mu.Unlock()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	var lis net.Listener
	var err error
	for range 50 { // the old port may take a moment to be free again
		if lis, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("catest: listen: %v", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(r.ca.root)
	creds := credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{r.cert},
		ClientAuth:   tls.VerifyClientCertIfGiven,
		ClientCAs:    pool,
		MinVersion:   tls.VersionTLS12,
	})
	srv := grpc.NewServer(grpc.Creds(creds), grpc.UnaryInterceptor(r.unary), grpc.StreamInterceptor(r.stream))
	cav1.RegisterCertificateAuthorityServiceServer(srv, r.ca)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	r.mu.Lock()
	r.addr, r.srv, r.health = lis.Addr().String(), srv, hs
	r.setServingLocked(!r.notServing)
	r.mu.Unlock()
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(r.Stop)
}

// Stop closes the listener and every connection at once.
func (r *Replica) Stop() {
	r.mu.Lock()
	srv := r.srv
	r.srv = nil
	r.mu.Unlock()
	if srv != nil {
		srv.Stop()
	}
}

// Addr returns the address the replica listens on.
func (r *Replica) Addr() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.addr
}

// SetServing sets the replica's gRPC health status (service ""), as the
// real CA reports NOT_SERVING when it cannot issue.
func (r *Replica) SetServing(serving bool) {
	r.mu.Lock()
	r.notServing = !serving
	r.setServingLocked(serving)
	r.mu.Unlock()
}

func (r *Replica) setServingLocked(serving bool) {
	st := healthpb.HealthCheckResponse_SERVING
	if !serving {
		st = healthpb.HealthCheckResponse_NOT_SERVING
	}
	if r.health != nil {
		r.health.SetServingStatus("", st)
	}
}

// Fail makes every call that reaches the replica fail with err, as a
// replica that lost its datastore answers Unavailable; nil serves again.
func (r *Replica) Fail(err error) { r.FailNext(-1, err) }

// FailNext makes the next n calls (every call if n < 0) fail with err.
func (r *Replica) FailNext(n int, err error) {
	r.mu.Lock()
	r.failErr, r.failLeft = err, n
	r.mu.Unlock()
}

// Calls returns how many CA calls reached the replica, failed ones
// included.
func (r *Replica) Calls() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls
}

// admit counts a call of the CA service and returns the error it must
// fail with, if any. Health checks are neither counted nor failed.
func (r *Replica) admit(method string) error {
	if !strings.HasPrefix(method, "/"+cav1.CertificateAuthorityService_ServiceDesc.ServiceName+"/") {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	if r.failErr == nil || r.failLeft == 0 {
		return nil
	}
	if r.failLeft > 0 {
		r.failLeft--
	}
	return r.failErr
}

func (r *Replica) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if err := r.admit(info.FullMethod); err != nil {
		return nil, err
	}
	return h(ctx, req)
}

func (r *Replica) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if err := r.admit(info.FullMethod); err != nil {
		return err
	}
	return h(srv, ss)
}
