package catest

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"log"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/internal/freeport"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// Replica is one endpoint of the CA: its own listener and TLS in front of
// the one real server, as CA replicas share one datastore. Tests stop a
// replica (every connection closes at once, as when its process is
// killed), mark it NOT_SERVING, inject faults into its calls alone, and
// count the calls that reached it.
type Replica struct {
	ca     *CA
	tls    func() *tls.Config
	health *health.Server
	hsrv   *grpc.Server // serves the replica's own health status
	faults faults

	mu   sync.Mutex
	addr string
	http *http.Server
}

// newReplica returns a replica of ca with the given TLS configuration,
// not yet serving.
func (ca *CA) newReplica(tlsConf func() *tls.Config, addr string) *Replica {
	r := &Replica{ca: ca, tls: tlsConf, health: health.NewServer(), hsrv: grpc.NewServer(), addr: addr}
	healthpb.RegisterHealthServer(r.hsrv, r.health)
	return r
}

// Start serves the CA on its primary replica (on a fresh port the first
// time, on the same port after Stop) until Stop or the end of the test.
func (ca *CA) Start(t testing.TB) {
	t.Helper()
	ca.mu.Lock()
	if ca.primary == nil {
		ca.primary = ca.newReplica(ca.srv.TLSConfig, "")
	}
	r := ca.primary
	ca.mu.Unlock()
	r.Start(t)
}

// Stop stops the primary replica: its listener and every connection close
// at once.
func (ca *CA) Stop() {
	ca.mu.Lock()
	r := ca.primary
	ca.mu.Unlock()
	if r != nil {
		r.Stop()
	}
}

// Addr returns the address of the primary replica ("" before Start).
func (ca *CA) Addr() string {
	ca.mu.Lock()
	r := ca.primary
	ca.mu.Unlock()
	if r == nil {
		return ""
	}
	return r.Addr()
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
	r := ca.newReplica(ca.srv.TLSConfig, addr)
	r.Start(t)
	return r
}

// Impostor starts a server in front of ca's real services that presents
// an SVID for id, signed by ca's own authority, instead of the CA's
// server ID: what a thief of any SVID of the trust domain could stand up.
// Agents must refuse it.
func (ca *CA) Impostor(t testing.TB, id spiffeid.ID) *Replica {
	t.Helper()
	svid := ca.Issue(t, id, time.Hour)
	cert := tls.Certificate{PrivateKey: svid.PrivateKey, Leaf: svid.Certificates[0]}
	for _, c := range svid.Certificates {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	pool := x509.NewCertPool()
	for _, c := range ca.Bundle().X509Authorities() {
		pool.AddCert(c)
	}
	conf := &tls.Config{
		Certificates: []tls.Certificate{cert}, ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: pool,
		MinVersion: tls.VersionTLS13, NextProtos: []string{"h2"},
	}
	r := ca.newReplica(func() *tls.Config { return conf }, "")
	r.Start(t)
	return r
}

// Start serves the replica (on a fresh 127.0.0.1 port the first time, on
// the same address after Stop) until Stop or the end of the test.
func (r *Replica) Start(t testing.TB) {
	t.Helper()
	lis := r.listen(t)
	srv := &http.Server{Handler: r, TLSConfig: r.tls(), ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: log.New(io.Discard, "", 0)} // failed handshakes are what some tests are about
	r.mu.Lock()
	r.addr, r.http = lis.Addr().String(), srv
	r.mu.Unlock()
	go func() { _ = srv.ServeTLS(lis, "", "") }()
	t.Cleanup(r.Stop)
}

// listen listens on the replica's address, or a fresh one; the old port
// may take a moment to be free again after Stop (bounded).
func (r *Replica) listen(t testing.TB) net.Listener {
	t.Helper()
	r.mu.Lock()
	addr := r.addr
	r.mu.Unlock()
	if addr == "" {
		a, err := freeport.Addr()
		check(t, err)
		addr = a
	}
	var err error
	for range 50 {
		var lis net.Listener
		if lis, err = net.Listen("tcp", addr); err == nil {
			return lis
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("catest: listen on %s: %v", addr, err)
	return nil
}

// Stop closes the listener and every connection at once.
func (r *Replica) Stop() {
	r.mu.Lock()
	srv := r.http
	r.http = nil
	r.mu.Unlock()
	if srv != nil {
		_ = srv.Close()
	}
}

// Addr returns the address the replica listens on.
func (r *Replica) Addr() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.addr
}

// SetServing sets the replica's gRPC health status (service ""), as a
// real replica reports NOT_SERVING when it cannot issue.
func (r *Replica) SetServing(serving bool) {
	st := healthpb.HealthCheckResponse_SERVING
	if !serving {
		st = healthpb.HealthCheckResponse_NOT_SERVING
	}
	r.health.SetServingStatus("", st)
}

// Inject makes the next n calls of method that reach this replica (every
// call if n < 0; "" for every method) suffer f; see CA.Inject.
func (r *Replica) Inject(method string, n int, f Fault) { r.faults.inject(method, n, f) }

// Fail makes every call that reaches the replica fail with err, as a
// replica that lost its datastore answers Unavailable; nil serves again.
func (r *Replica) Fail(err error) { r.FailNext(-1, err) }

// FailNext makes the next n calls (every call if n < 0) fail with err.
func (r *Replica) FailNext(n int, err error) { r.faults.inject("", n, Fault{Err: err}) }

// Calls returns how many CA calls reached the replica, faulted ones
// included (health checks are not counted).
func (r *Replica) Calls() int {
	r.faults.mu.Lock()
	defer r.faults.mu.Unlock()
	return r.faults.calls
}

// ServeHTTP passes a gRPC call through the replica's faults, then the
// CA's, to the real server; health checks go to the replica's own health
// service.
func (r *Replica) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if strings.HasPrefix(req.URL.Path, "/grpc.health.v1.Health/") {
		r.hsrv.ServeHTTP(w, req)
		return
	}
	method := caMethod(req.URL.Path)
	if method != "" {
		if suffer(w, req, r.faults.admit(method)) || suffer(w, req, r.ca.faults.admit(method)) {
			return
		}
	}
	if method != MethodBatchSign {
		r.ca.grpc.ServeHTTP(w, req)
		return
	}
	rec := &recorder{ResponseWriter: w}
	r.ca.grpc.ServeHTTP(rec, req)
	r.ca.faults.countSigned(signedIn(rec.body.Bytes()))
}
