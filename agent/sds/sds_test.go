package sds

import (
	"context"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/castellan-dev/castellan/agent/attest"
	"github.com/castellan-dev/castellan/agent/attest/peer"
	"github.com/castellan-dev/castellan/agent/client/catest"
	"github.com/castellan-dev/castellan/agent/state"
	"github.com/castellan-dev/castellan/integration/envoysds"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

var workload = []state.Selector{{Type: "unix", Value: "uid:1000"}}

// fixedAttestor attests every peer with the same selectors.
type fixedAttestor []state.Selector

func (f fixedAttestor) Attest(context.Context, peer.Peer) ([]state.Selector, error) { return f, nil }

type harness struct {
	ca      *catest.CA
	store   *state.Store
	sock    string
	nacks   prometheus.Counter
	denied  prometheus.Counter
	streams prometheus.Gauge
	srv     *Server
	gs      *grpc.Server
	callers []state.Selector
}

// newHarness serves SDS on a real Unix socket with attestation that yields
// callerSelectors, backed by a store holding one identity for workload.
func newHarness(t *testing.T, callerSelectors []state.Selector) *harness {
	t.Helper()
	h := &harness{ca: catest.New(t, spiffeid.RequireTrustDomainFromString("cluster.local")), store: state.NewStore()}
	h.nacks = prometheus.NewCounter(prometheus.CounterOpts{Name: "nacks"})
	h.denied = prometheus.NewCounter(prometheus.CounterOpts{Name: "denied"})
	h.streams = prometheus.NewGauge(prometheus.GaugeOpts{Name: "streams"})
	h.publish(t, "ns/default/sa/productpage")
	srv, err := New(Config{Store: h.store, Metrics: Metrics{Streams: h.streams, NACKs: h.nacks, Unmatched: h.denied}})
	if err != nil {
		t.Fatal(err)
	}
	h.srv = srv
	h.sock = filepath.Join(t.TempDir(), "sds.sock")
	h.callers = callerSelectors
	h.serve(t)
	return h
}

// restart stops the gRPC server, ending every stream, and serves again on
// the same socket.
func (h *harness) restart(t *testing.T) {
	t.Helper()
	h.gs.Stop()
	h.serve(t)
}

func (h *harness) serve(t *testing.T) {
	t.Helper()
	_ = os.Remove(h.sock)
	lis, err := net.Listen("unix", h.sock)
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(grpc.Creds(attest.NewCredentials(fixedAttestor(h.callers), attest.CredentialsConfig{Timeout: time.Second})))
	secretv3.RegisterSecretDiscoveryServiceServer(gs, h.srv)
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	h.gs = gs
}

// publish replaces the store's content with a fresh SVID for each id.
func (h *harness) publish(t *testing.T, ids ...string) []*x509svid.SVID {
	t.Helper()
	var out []state.Identity
	var svids []*x509svid.SVID
	for i, id := range ids {
		s := h.ca.Issue(t, spiffeid.RequireFromPath(h.ca.TrustDomain, "/"+id), time.Hour)
		svids = append(svids, s)
		out = append(out, state.Identity{EntryID: "e" + string(rune('0'+i)), Selectors: workload, SVID: s})
	}
	h.store.Publish(out, h.ca.Bundle())
	return svids
}

func (h *harness) conn(t *testing.T) *grpc.ClientConn {
	t.Helper()
	c, err := envoysds.Dial(h.sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func node() *corev3.Node {
	md, _ := structpb.NewStruct(map[string]any{"NAMESPACE": "default", "SERVICE_ACCOUNT": "productpage"})
	return &corev3.Node{Id: "sidecar~127.0.0.1~productpage.default~default.svc.cluster.local", Cluster: "productpage.default", Metadata: md}
}

func startClient(t *testing.T, conn *grpc.ClientConn, v envoysds.Validator) *envoysds.Client {
	t.Helper()
	c, err := envoysds.New(conn, envoysds.Config{Node: node(), ResourceNames: []string{DefaultName, RootCAName}, Validate: v,
		MinBackoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return c
}

func nextUpdate(t *testing.T, c *envoysds.Client) envoysds.Update {
	t.Helper()
	select {
	case u := <-c.Updates():
		return u
	case <-time.After(5 * time.Second):
		t.Fatalf("no SDS update within 5s (stats %+v)", c.Stats())
		return envoysds.Update{}
	}
}

// verifyUpdate checks that default chains to ROOTCA and carries want's ID and serial.
func verifyUpdate(t *testing.T, u envoysds.Update, want *x509svid.SVID) {
	t.Helper()
	cert, pool, err := envoysds.TLS(u.Secrets)
	if err != nil {
		t.Fatal(err)
	}
	opts := x509.VerifyOptions{Roots: pool, Intermediates: catest.Intermediates(t, cert.Certificate), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}
	if _, err := cert.Leaf.Verify(opts); err != nil {
		t.Fatalf("default does not verify against ROOTCA: %v", err)
	}
	if cert.Leaf.SerialNumber.Cmp(want.Certificates[0].SerialNumber) != 0 || cert.Leaf.URIs[0].String() != want.ID.String() {
		t.Fatalf("default is %v serial %v, want %v serial %v", cert.Leaf.URIs, cert.Leaf.SerialNumber, want.ID, want.Certificates[0].SerialNumber)
	}
}

// quiet asserts that the client receives no response for d.
func quiet(t *testing.T, c *envoysds.Client, d time.Duration) {
	t.Helper()
	before := c.Stats().Responses
	time.Sleep(d)
	if got := c.Stats().Responses; got != before {
		t.Fatalf("got %d unexpected responses", got-before)
	}
}

func TestStreamServesDefaultAndROOTCAThenPushesRotation(t *testing.T) {
	h := newHarness(t, workload)
	c := startClient(t, h.conn(t), nil)
	first := nextUpdate(t, c)
	verifyUpdate(t, first, h.store.Current().Identities[0].SVID)
	quiet(t, c, 100*time.Millisecond) // the ACK is not answered
	rotated := h.publish(t, "ns/default/sa/productpage")
	second := nextUpdate(t, c)
	verifyUpdate(t, second, rotated[0])
	if second.Version == first.Version {
		t.Fatalf("version did not change on rotation: %q", second.Version)
	}
	if got := testutil.ToFloat64(h.streams); got != 1 {
		t.Fatalf("streams gauge = %v, want 1", got)
	}
}

func TestStreamDoesNotResendNACKedVersion(t *testing.T) {
	h := newHarness(t, workload)
	var calls atomic.Int32
	c := startClient(t, h.conn(t), func(map[string]*tlsv3.Secret) error {
		if calls.Add(1) == 1 {
			return errors.New("rejecting the first secret")
		}
		return nil
	})
	deadline := time.Now().Add(5 * time.Second)
	for c.Stats().NACKs == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if c.Stats().NACKs != 1 {
		t.Fatalf("stats %+v, want one NACK", c.Stats())
	}
	quiet(t, c, 200*time.Millisecond) // the NACKed version is not sent again
	if got := testutil.ToFloat64(h.nacks); got != 1 {
		t.Fatalf("NACK counter = %v, want 1", got)
	}
	rotated := h.publish(t, "ns/default/sa/productpage")
	verifyUpdate(t, nextUpdate(t, c), rotated[0]) // the next change is
}

func TestStreamResubscribesAfterServerRestart(t *testing.T) {
	h := newHarness(t, workload)
	c := startClient(t, h.conn(t), nil)
	nextUpdate(t, c)
	h.restart(t)
	u := nextUpdate(t, c)
	verifyUpdate(t, u, h.store.Current().Identities[0].SVID)
	if s := c.Stats(); s.Streams < 2 {
		t.Fatalf("streams opened = %d, want a resubscription", s.Streams)
	}
}

// pinnedTo attests every peer as fixedAttestor does but pins the process
// proc instead of the peer, so that a test can make "the caller" exit while
// its connection stays open (as when a connection outlives its owner in
// another process).
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
	for _, delta := range []bool{false, true} {
		t.Run(map[bool]string{false: "sotw", true: "delta"}[delta], func(t *testing.T) {
			h := newHarness(t, workload)
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
			secretv3.RegisterSecretDiscoveryServiceServer(gs, h.srv)
			go func() { _ = gs.Serve(lis) }()
			t.Cleanup(gs.Stop)
			conn, err := envoysds.Dial(sock)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = conn.Close() })
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			client := secretv3.NewSecretDiscoveryServiceClient(conn)
			var recv func() error
			if delta {
				s, err := client.DeltaSecrets(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if err := s.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: SecretTypeURL, ResourceNamesSubscribe: []string{DefaultName}}); err != nil {
					t.Fatal(err)
				}
				recv = func() error { _, err := s.Recv(); return err }
			} else {
				s, err := client.StreamSecrets(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if err := s.Send(&discoveryv3.DiscoveryRequest{TypeUrl: SecretTypeURL, ResourceNames: []string{DefaultName}}); err != nil {
					t.Fatal(err)
				}
				recv = func() error { _, err := s.Recv(); return err }
			}
			if err := recv(); err != nil {
				t.Fatalf("first response: %v", err)
			}
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			h.publish(t, "ns/default/sa/productpage") // a rotation
			if err := recv(); status.Code(err) != codes.PermissionDenied {
				t.Fatalf("after the attested process exited: err = %v, want PermissionDenied (no rotated key)", err)
			}
		})
	}
}
