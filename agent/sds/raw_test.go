package sds

import (
	"context"
	"strings"
	"testing"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/castellan-dev/castellan/agent/state"
)

func rawStream(t *testing.T, h *harness) secretv3.SecretDiscoveryService_StreamSecretsClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	s, err := secretv3.NewSecretDiscoveryServiceClient(h.conn(t)).StreamSecrets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// receiver reads a stream in the background so that tests can wait for
// the next message with a timeout without losing one.
type receiver[T any] struct {
	ch  chan *T
	err chan error
}

func receive[T any](recv func() (*T, error)) *receiver[T] {
	r := &receiver[T]{ch: make(chan *T, 16), err: make(chan error, 1)}
	go func() {
		for {
			m, err := recv()
			if err != nil {
				r.err <- err
				return
			}
			r.ch <- m
		}
	}()
	return r
}

// next returns the next message, or context.DeadlineExceeded if none
// arrives within d.
func (r *receiver[T]) next(d time.Duration) (*T, error) {
	select {
	case m := <-r.ch:
		return m, nil
	case err := <-r.err:
		return nil, err
	case <-time.After(d):
		return nil, context.DeadlineExceeded
	}
}

func secretsOf(t *testing.T, resources []*tlsv3.Secret) []string {
	t.Helper()
	var names []string
	for _, s := range resources {
		names = append(names, s.GetName())
	}
	return names
}

func decodeAll(t *testing.T, r *discoveryv3.DiscoveryResponse) []*tlsv3.Secret {
	t.Helper()
	var out []*tlsv3.Secret
	for _, a := range r.GetResources() {
		var s tlsv3.Secret
		if err := a.UnmarshalTo(&s); err != nil {
			t.Fatal(err)
		}
		out = append(out, &s)
	}
	return out
}

func TestStreamRejectsUnknownTypeURL(t *testing.T) {
	h := newHarness(t, workload)
	s := rawStream(t, h)
	rs := receive(s.Recv)
	if err := s.Send(&discoveryv3.DiscoveryRequest{Node: node(), TypeUrl: "type.googleapis.com/envoy.config.cluster.v3.Cluster", ResourceNames: []string{"default"}}); err != nil {
		t.Fatal(err)
	}
	_, err := rs.next(5 * time.Second)
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "type_url") {
		t.Fatalf("err = %v, want InvalidArgument naming type_url", err)
	}
}

func TestStreamOmitsUnknownResourceNames(t *testing.T) {
	h := newHarness(t, workload)
	s := rawStream(t, h)
	rs := receive(s.Recv)
	if err := s.Send(&discoveryv3.DiscoveryRequest{Node: node(), TypeUrl: SecretTypeURL, ResourceNames: []string{"no-such-secret"}}); err != nil {
		t.Fatal(err)
	}
	if r, err := rs.next(200 * time.Millisecond); err != context.DeadlineExceeded {
		t.Fatalf("got %v, %v; want no response for an unknown name", r, err)
	}
	// Adding a known name on the same stream is answered with only that one.
	if err := s.Send(&discoveryv3.DiscoveryRequest{Node: node(), TypeUrl: SecretTypeURL, ResourceNames: []string{"no-such-secret", "ROOTCA"}}); err != nil {
		t.Fatal(err)
	}
	r, err := rs.next(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if names := secretsOf(t, decodeAll(t, r)); len(names) != 1 || names[0] != RootCAName {
		t.Fatalf("names = %v, want [ROOTCA]", names)
	}
}

func TestStreamServesSPIFFEIDAndTrustDomainNames(t *testing.T) {
	h := newHarness(t, workload)
	id := h.store.Current().Identities[0].SVID.ID.String()
	s := rawStream(t, h)
	rs := receive(s.Recv)
	names := []string{id, "cluster.local", "spiffe://cluster.local"}
	if err := s.Send(&discoveryv3.DiscoveryRequest{Node: node(), TypeUrl: SecretTypeURL, ResourceNames: names}); err != nil {
		t.Fatal(err)
	}
	r, err := rs.next(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	got := decodeAll(t, r)
	if n := secretsOf(t, got); len(n) != 3 || n[0] != id || n[1] != names[1] || n[2] != names[2] {
		t.Fatalf("names = %v, want %v", n, names)
	}
	if got[0].GetTlsCertificate() == nil || got[1].GetValidationContext() == nil || got[2].GetValidationContext() == nil {
		t.Fatalf("wrong secret types: %v", got)
	}
	if r.GetVersionInfo() == "" || r.GetNonce() == "" {
		t.Fatalf("response lacks version or nonce: %v", r)
	}
}

func TestDefaultIsFirstOfSeveralIdentities(t *testing.T) {
	h := newHarness(t, workload)
	svids := h.publish(t, "ns/b/sa/second", "ns/a/sa/first")
	s := rawStream(t, h)
	rs := receive(s.Recv)
	if err := s.Send(&discoveryv3.DiscoveryRequest{Node: node(), TypeUrl: SecretTypeURL, ResourceNames: []string{DefaultName}}); err != nil {
		t.Fatal(err)
	}
	r, err := rs.next(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	chain := decodeAll(t, r)[0].GetTlsCertificate().GetCertificateChain().GetInlineBytes()
	first, _, _ := svids[1].Marshal()
	if string(chain) != string(first) {
		t.Fatal("default is not the first identity in snapshot order (spiffe://cluster.local/ns/a/sa/first)")
	}
}

func TestCallerMatchingNothingIsDenied(t *testing.T) {
	h := newHarness(t, []state.Selector{{Type: "unix", Value: "uid:4242"}})
	s := rawStream(t, h)
	rs := receive(s.Recv)
	_ = s.Send(&discoveryv3.DiscoveryRequest{Node: node(), TypeUrl: SecretTypeURL, ResourceNames: []string{DefaultName}})
	_, err := rs.next(5 * time.Second)
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "uid:4242") {
		t.Fatalf("err = %v, want PermissionDenied naming the selectors", err)
	}
	if got := testutil.ToFloat64(h.denied); got != 1 {
		t.Fatalf("denied counter = %v, want 1", got)
	}
}

func TestFetchSecrets(t *testing.T) {
	h := newHarness(t, workload)
	c := secretv3.NewSecretDiscoveryServiceClient(h.conn(t))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := c.FetchSecrets(ctx, &discoveryv3.DiscoveryRequest{TypeUrl: SecretTypeURL, ResourceNames: []string{DefaultName, RootCAName}})
	if err != nil {
		t.Fatal(err)
	}
	if n := secretsOf(t, decodeAll(t, r)); len(n) != 2 {
		t.Fatalf("names = %v", n)
	}
	_, err = c.FetchSecrets(ctx, &discoveryv3.DiscoveryRequest{TypeUrl: SecretTypeURL, ResourceNames: []string{"nope"}})
	if status.Code(err) != codes.NotFound {
		t.Fatalf("err = %v, want NotFound", err)
	}
}

func TestDeltaSubscribePushAndReconnect(t *testing.T) {
	h := newHarness(t, workload)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	client := secretv3.NewSecretDiscoveryServiceClient(h.conn(t))
	s, err := client.DeltaSecrets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rs := receive(s.Recv)
	if err := s.Send(&discoveryv3.DeltaDiscoveryRequest{Node: node(), TypeUrl: SecretTypeURL, ResourceNamesSubscribe: []string{DefaultName, RootCAName}}); err != nil {
		t.Fatal(err)
	}
	r, err := rs.next(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	versions := map[string]string{}
	for _, res := range r.GetResources() {
		versions[res.GetName()] = res.GetVersion()
	}
	if len(versions) != 2 || r.GetNonce() == "" {
		t.Fatalf("first delta response = %v", r)
	}
	// ACK: not answered.
	_ = s.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: SecretTypeURL, ResponseNonce: r.GetNonce()})
	if m, err := rs.next(100 * time.Millisecond); err != context.DeadlineExceeded {
		t.Fatalf("ACK answered with %v, %v", m, err)
	}
	// Rotation: only default changes.
	h.publish(t, "ns/default/sa/productpage")
	r, err = rs.next(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.GetResources()) != 1 || r.GetResources()[0].GetName() != DefaultName || r.GetResources()[0].GetVersion() == versions[DefaultName] {
		t.Fatalf("rotation pushed %v, want only a new default", r.GetResources())
	}
	versions[DefaultName] = r.GetResources()[0].GetVersion()
	// NACK: counted, not answered.
	_ = s.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: SecretTypeURL, ResponseNonce: r.GetNonce(), ErrorDetail: status.New(codes.InvalidArgument, "no").Proto()})
	if m, err := rs.next(100 * time.Millisecond); err != context.DeadlineExceeded {
		t.Fatalf("NACK answered with %v, %v", m, err)
	}
	if got := testutil.ToFloat64(h.nacks); got != 1 {
		t.Fatalf("NACK counter = %v, want 1", got)
	}
	// Reconnect holding current versions: nothing to send.
	s2, err := client.DeltaSecrets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rs2 := receive(s2.Recv)
	_ = s2.Send(&discoveryv3.DeltaDiscoveryRequest{Node: node(), TypeUrl: SecretTypeURL, InitialResourceVersions: versions})
	if m, err := rs2.next(200 * time.Millisecond); err != context.DeadlineExceeded {
		t.Fatalf("reconnect with current versions answered with %v, %v", m, err)
	}
}
