package endpoints

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/castellan-dev/castellan/agent/attest"
	"github.com/castellan-dev/castellan/agent/attest/peer"
	"github.com/castellan-dev/castellan/agent/attest/unixattest"
	"github.com/castellan-dev/castellan/agent/client/catest"
	"github.com/castellan-dev/castellan/agent/state"
	"github.com/castellan-dev/castellan/integration/envoysds"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// self returns selectors the real unix attestor yields for this test process.
func self(t testing.TB) []state.Selector {
	t.Helper()
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	return []state.Selector{
		{Type: "unix", Value: "uid:" + strconv.Itoa(os.Getuid())},
		{Type: "unix", Value: "path:" + exe},
	}
}

type env struct {
	ca    *catest.CA
	store *state.Store
	sock  string
	reg   *prometheus.Registry
	done  chan error
}

// start serves endpoints with the real unix attestor (or a) on a fresh socket.
func start(t testing.TB, a attest.Attestor, opts ...func(*Config)) *env {
	t.Helper()
	e := &env{ca: catest.New(t, spiffeid.RequireTrustDomainFromString("cluster.local")), store: state.NewStore(), reg: prometheus.NewRegistry(), done: make(chan error, 1)}
	e.rotate(t)
	e.sock = filepath.Join(t.TempDir(), "agent.sock")
	if a == nil {
		a = unixattest.New()
	}
	cfg := Config{SocketPath: e.sock, Store: e.store, Attestor: a, Registry: e.reg, TrustDomain: e.ca.TrustDomain}
	for _, o := range opts {
		o(&cfg)
	}
	ep, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { e.done <- ep.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-e.done:
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return within 10s of cancel")
		}
	})
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		// Not a probe connection: one closed before it is attested counts
		// as an attestation failure (the process no longer holds it).
		if fi, err := os.Stat(e.sock); err == nil && fi.Mode().Perm() == 0o666 {
			return e
		}
		time.Sleep(2 * time.Millisecond)
	}
	t.Fatal("socket not created within 5s")
	return nil
}

// rotate publishes a fresh SVID for this process's selectors.
func (e *env) rotate(t testing.TB) *x509svid.SVID {
	t.Helper()
	s := e.ca.Issue(t, spiffeid.RequireFromPath(e.ca.TrustDomain, "/ns/default/sa/productpage"), time.Hour)
	e.store.Publish([]state.Identity{{EntryID: "e1", Selectors: self(t), SVID: s}}, e.ca.Bundle())
	return s
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestSocketIsWorldWritableAndRemovedOnStop(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "agent.sock")
	// A stale socket from a dead agent is replaced.
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	_ = l.Close()
	ep, err := New(Config{SocketPath: sock, Store: state.NewStore(), Attestor: unixattest.New()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ep.Serve(ctx) }()
	var fi os.FileInfo
	for i := 0; i < 500; i++ {
		if fi, err = os.Stat(sock); err == nil && fi.Mode().Perm() == 0o666 {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if fi == nil || fi.Mode().Perm() != 0o666 {
		t.Fatalf("socket mode = %v, want 0666", fi)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket still present after stop: %v", err)
	}
}

func TestServeRefusesNonSocketAndMissingDirectory(t *testing.T) {
	file := filepath.Join(t.TempDir(), "not-a-socket")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{file, filepath.Join(t.TempDir(), "missing", "agent.sock")} {
		ep, err := New(Config{SocketPath: path, Store: state.NewStore(), Attestor: unixattest.New()})
		if err != nil {
			t.Fatal(err)
		}
		if err := ep.Serve(context.Background()); err == nil || !strings.Contains(err.Error(), "endpoints:") {
			t.Fatalf("Serve(%s) = %v, want an endpoints error", path, err)
		}
	}
}

func TestGoSPIFFEClientOverRealAttestation(t *testing.T) {
	e := start(t, nil)
	c, err := workloadapi.New(ctxT(t), workloadapi.WithAddr("unix://"+e.sock))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	x, err := c.FetchX509Context(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := x509svid.Verify(x.DefaultSVID().Certificates, x.Bundles); err != nil {
		t.Fatalf("x509svid.Verify: %v", err)
	}
	if got := testutil.ToFloat64(e.metric(t, "castellan_agent_attestation_failures_total")); got != 0 {
		t.Fatalf("attestation failures = %v", got)
	}
}

// metric returns a collector registered by the endpoints, by name.
func (e *env) metric(t *testing.T, name string) prometheus.Collector {
	t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var total float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			total += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "sum"})
	g.Set(total)
	return g
}

func TestEnvoyClientReceivesPushOverRealAttestation(t *testing.T) {
	e := start(t, nil)
	conn, err := envoysds.Dial(e.sock)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c, err := envoysds.New(conn, envoysds.Config{Node: &corev3.Node{Id: "sidecar~127.0.0.1~pp~default.svc.cluster.local", Cluster: "pp"},
		ResourceNames: []string{"default", "ROOTCA"}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(ctx) }()
	defer func() { cancel(); <-done }()
	next := func() envoysds.Update {
		select {
		case u := <-c.Updates():
			return u
		case <-time.After(5 * time.Second):
			t.Fatalf("no update within 5s; stats %+v", c.Stats())
			return envoysds.Update{}
		}
	}
	check := func(u envoysds.Update, want *x509svid.SVID) {
		cert, pool, err := envoysds.TLS(u.Secrets)
		if err != nil {
			t.Fatal(err)
		}
		opts := x509.VerifyOptions{Roots: pool, Intermediates: catest.Intermediates(t, cert.Certificate), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}
		if _, err := cert.Leaf.Verify(opts); err != nil {
			t.Fatal(err)
		}
		if cert.Leaf.SerialNumber.Cmp(want.Certificates[0].SerialNumber) != 0 {
			t.Fatal("default is not the current SVID")
		}
	}
	check(next(), e.store.Current().Identities[0].SVID)
	check(next2(t, e, next), e.store.Current().Identities[0].SVID)
	if got := testutil.ToFloat64(e.metric(t, "castellan_agent_sds_streams")); got != 1 {
		t.Fatalf("sds streams = %v, want 1", got)
	}
}

func next2(t *testing.T, e *env, next func() envoysds.Update) envoysds.Update {
	e.rotate(t)
	return next()
}

type failingAttestor struct{}

func (failingAttestor) Attest(context.Context, peer.Peer) ([]state.Selector, error) {
	return nil, &peer.Error{Reason: peer.ReasonExe, Err: errors.New("cannot read executable")}
}

func TestFailedAttestationIsDeniedAndCounted(t *testing.T) {
	e := start(t, failingAttestor{})
	before := testutil.ToFloat64(e.metric(t, "castellan_agent_attestation_failures_total"))
	c, err := workloadapi.New(ctxT(t), workloadapi.WithAddr("unix://"+e.sock))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.FetchX509SVID(ctxT(t))
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "attestation failed") {
		t.Fatalf("err = %v, want PermissionDenied for failed attestation", err)
	}
	if got := testutil.ToFloat64(e.metric(t, "castellan_agent_attestation_failures_total")) - before; got < 1 {
		t.Fatalf("attestation failures rose by %v, want at least 1 (the call; the readiness probe may add one)", got)
	}
}

func TestGarbageOnSocketIsDroppedAndOthersServed(t *testing.T) {
	e := start(t, nil)
	bad, err := net.Dial("unix", e.sock)
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	junk := make([]byte, 64<<10)
	_, _ = rand.Read(junk)
	_, _ = bad.Write(junk)
	// The server closes the garbage connection...
	_ = bad.SetReadDeadline(time.Now().Add(handshakeTimeout + 5*time.Second))
	buf := make([]byte, 4096)
	var rerr error
	for i := 0; i < 1000 && rerr == nil; i++ {
		_, rerr = bad.Read(buf)
	}
	var ne net.Error
	if errors.As(rerr, &ne) && ne.Timeout() {
		t.Fatal("garbage connection still open after the handshake timeout")
	}
	// ...and keeps serving everyone else.
	c, err := workloadapi.New(ctxT(t), workloadapi.WithAddr("unix://"+e.sock))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.FetchX509SVID(ctxT(t)); err != nil {
		t.Fatalf("fetch after garbage: %v", err)
	}
}
