package workloadapi

import (
	"context"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	workloadpb "github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/castellan-dev/castellan/agent/attest"
	"github.com/castellan-dev/castellan/agent/attest/peer"
	"github.com/castellan-dev/castellan/agent/client/catest"
	"github.com/castellan-dev/castellan/agent/state"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

var workload = []state.Selector{{Type: "unix", Value: "uid:1000"}}

type fixedAttestor []state.Selector

func (f fixedAttestor) Attest(context.Context, peer.Peer) ([]state.Selector, error) { return f, nil }

type harness struct {
	ca      *catest.CA
	store   *state.Store
	addr    string
	denied  prometheus.Counter
	streams prometheus.Gauge
}

func newHarness(t *testing.T, caller []state.Selector) *harness {
	t.Helper()
	h := &harness{ca: catest.New(t, spiffeid.RequireTrustDomainFromString("cluster.local")), store: state.NewStore(),
		denied:  prometheus.NewCounter(prometheus.CounterOpts{Name: "denied"}),
		streams: prometheus.NewGauge(prometheus.GaugeOpts{Name: "streams"})}
	h.publish(t)
	srv, err := New(Config{Store: h.store, Metrics: Metrics{Streams: h.streams, Unmatched: h.denied}})
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "api.sock")
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(grpc.Creds(attest.NewCredentials(fixedAttestor(caller), attest.CredentialsConfig{Timeout: time.Second})))
	workloadpb.RegisterSpiffeWorkloadAPIServer(gs, srv)
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	h.addr = "unix://" + sock
	return h
}

func (h *harness) publish(t *testing.T) *x509svid.SVID {
	t.Helper()
	s := h.ca.Issue(t, spiffeid.RequireFromPath(h.ca.TrustDomain, "/ns/default/sa/details"), time.Hour)
	h.store.Publish([]state.Identity{{EntryID: "e1", Selectors: workload, SVID: s}}, h.ca.Bundle())
	return s
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func client(t *testing.T, h *harness) *workloadapi.Client {
	t.Helper()
	c, err := workloadapi.New(ctxT(t), workloadapi.WithAddr(h.addr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func verify(t *testing.T, svid *x509svid.SVID, bundles x509bundle.Source, want *x509svid.SVID) {
	t.Helper()
	id, _, err := x509svid.Verify(svid.Certificates, bundles)
	if err != nil {
		t.Fatalf("x509svid.Verify: %v", err)
	}
	if id != want.ID || svid.Certificates[0].SerialNumber.Cmp(want.Certificates[0].SerialNumber) != 0 {
		t.Fatalf("got %v serial %v, want %v serial %v", id, svid.Certificates[0].SerialNumber, want.ID, want.Certificates[0].SerialNumber)
	}
}

type watcher struct{ ch chan *workloadapi.X509Context }

func (w watcher) OnX509ContextUpdate(c *workloadapi.X509Context) { w.ch <- c }
func (w watcher) OnX509ContextWatchError(error)                  {}

func TestGoSPIFFEClientFetchesAndReceivesRotation(t *testing.T) {
	h := newHarness(t, workload)
	c := client(t, h)
	x, err := c.FetchX509Context(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	verify(t, x.DefaultSVID(), x.Bundles, h.store.Current().Identities[0].SVID)

	w := watcher{ch: make(chan *workloadapi.X509Context, 4)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = c.WatchX509Context(ctx, w) }()
	t.Cleanup(func() { cancel(); <-done })
	next := func() *workloadapi.X509Context {
		select {
		case x := <-w.ch:
			return x
		case <-time.After(5 * time.Second):
			t.Fatal("no X509Context update within 5s")
			return nil
		}
	}
	first := next()
	verify(t, first.DefaultSVID(), first.Bundles, h.store.Current().Identities[0].SVID)
	rotated := h.publish(t)
	second := next()
	verify(t, second.DefaultSVID(), second.Bundles, rotated)
	if got := testutil.ToFloat64(h.streams); got != 1 {
		t.Fatalf("streams gauge = %v, want 1", got)
	}
}

func TestGoSPIFFEClientFetchesBundles(t *testing.T) {
	h := newHarness(t, workload)
	set, err := client(t, h).FetchX509Bundles(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	b, ok := set.Get(h.ca.TrustDomain)
	if !ok || !b.Equal(h.ca.Bundle()) {
		t.Fatalf("bundle set %v lacks the CA's bundle", set)
	}
}

func rawClient(t *testing.T, h *harness) workloadpb.SpiffeWorkloadAPIClient {
	t.Helper()
	conn, err := grpc.NewClient(h.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return workloadpb.NewSpiffeWorkloadAPIClient(conn)
}

func TestMissingSecurityHeaderIsInvalidArgument(t *testing.T) {
	h := newHarness(t, workload)
	s, err := rawClient(t, h).FetchX509SVID(ctxT(t), &workloadpb.X509SVIDRequest{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Recv()
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), HeaderKey) {
		t.Fatalf("err = %v, want InvalidArgument naming %s", err, HeaderKey)
	}
}

func TestCallerMatchingNothingIsDenied(t *testing.T) {
	h := newHarness(t, []state.Selector{{Type: "unix", Value: "uid:7"}})
	_, err := client(t, h).FetchX509SVID(ctxT(t))
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("err = %v, want PermissionDenied", err)
	}
	if got := testutil.ToFloat64(h.denied); got < 1 {
		t.Fatalf("denied counter = %v, want >= 1", got)
	}
}

func TestJWTIsUnimplemented(t *testing.T) {
	h := newHarness(t, workload)
	_, err := client(t, h).ValidateJWTSVID(ctxT(t), "token", "aud")
	if status.Code(err) != codes.Unimplemented || !strings.Contains(err.Error(), "X.509") {
		t.Fatalf("err = %v, want Unimplemented pointing to X.509", err)
	}
}

// pinnedTo pins the process proc instead of the peer, so that a test can
// make "the caller" exit while its connection stays open.
type pinnedTo struct {
	credentials.TransportCredentials
	proc *peer.Process
}

func (p pinnedTo) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, info, err := p.TransportCredentials.ServerHandshake(raw)
	if ai, ok := info.(*attest.AuthInfo); ok {
		ai.Peer.Process = p.proc
	}
	return conn, info, err
}

func TestStreamEndsWhenAttestedProcessHasExited(t *testing.T) {
	h := newHarness(t, workload)
	srv, err := New(Config{Store: h.store})
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	proc, err := peer.Pin(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "pinned.sock")
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(grpc.Creds(pinnedTo{attest.NewCredentials(fixedAttestor(workload), attest.CredentialsConfig{Timeout: time.Second}), proc}))
	workloadpb.RegisterSpiffeWorkloadAPIServer(gs, srv)
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	h.addr = "unix://" + sock
	ctx := metadata.AppendToOutgoingContext(ctxT(t), HeaderKey, HeaderValue)
	s, err := rawClient(t, h).FetchX509SVID(ctx, &workloadpb.X509SVIDRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recv(); err != nil {
		t.Fatalf("first response: %v", err)
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	h.publish(t) // a rotation
	if _, err := s.Recv(); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("after the attested process exited: err = %v, want PermissionDenied (no rotated key)", err)
	}
}
