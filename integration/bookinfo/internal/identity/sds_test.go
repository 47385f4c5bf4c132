package identity_test

import (
	"context"
	"log/slog"
	"net"
	"path/filepath"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/castellan-dev/castellan/integration/bookinfo/internal/identity"
	"github.com/castellan-dev/castellan/integration/bookinfo/internal/identity/identitytest"
	"github.com/castellan-dev/castellan/integration/envoysds"
)

var td = spiffeid.RequireTrustDomainFromString("cluster.local")

// pushServer sends every response pushed on its channel to the one open
// stream and forwards every request the client sends.
type pushServer struct {
	secretv3.UnimplementedSecretDiscoveryServiceServer
	push     chan *discoveryv3.DiscoveryResponse
	requests chan *discoveryv3.DiscoveryRequest
}

func (s *pushServer) StreamSecrets(st grpc.BidiStreamingServer[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse]) error {
	errc := make(chan error, 1)
	go func() {
		for {
			req, err := st.Recv()
			if err != nil {
				errc <- err
				return
			}
			s.requests <- req
		}
	}()
	for {
		select {
		case err := <-errc:
			return err
		case resp := <-s.push:
			if err := st.Send(resp); err != nil {
				return err
			}
		}
	}
}

func startSDS(t *testing.T) (*pushServer, string) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "sds.sock")
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &pushServer{push: make(chan *discoveryv3.DiscoveryResponse, 4), requests: make(chan *discoveryv3.DiscoveryRequest, 16)}
	gs := grpc.NewServer()
	secretv3.RegisterSecretDiscoveryServiceServer(gs, srv)
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	return srv, sock
}

func secrets(t *testing.T, version string, ca *identitytest.CA, svid *x509svid.SVID) *discoveryv3.DiscoveryResponse {
	t.Helper()
	certPEM, keyPEM, err := svid.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	bundlePEM, err := ca.Bundle().Marshal()
	if err != nil {
		t.Fatal(err)
	}
	inline := func(b []byte) *corev3.DataSource {
		return &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: b}}
	}
	def := &tlsv3.Secret{Name: identity.SecretDefault, Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
		CertificateChain: inline(certPEM), PrivateKey: inline(keyPEM)}}}
	root := &tlsv3.Secret{Name: identity.SecretRootCA, Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
		TrustedCa: inline(bundlePEM)}}}
	resp := &discoveryv3.DiscoveryResponse{VersionInfo: version, Nonce: "n" + version, TypeUrl: envoysds.SecretTypeURL}
	for _, s := range []*tlsv3.Secret{def, root} {
		a, err := anypb.New(s)
		if err != nil {
			t.Fatal(err)
		}
		resp.Resources = append(resp.Resources, a)
	}
	return resp
}

func nextRequest(t *testing.T, srv *pushServer) *discoveryv3.DiscoveryRequest {
	t.Helper()
	select {
	case r := <-srv.requests:
		return r
	case <-time.After(5 * time.Second):
		t.Fatal("no request from the SDS client within 5s")
		return nil
	}
}

func TestSDSSourceFollowsPushesAndNACKsBadSecrets(t *testing.T) {
	ca := identitytest.NewCA(t, td)
	id := spiffeid.RequireFromString("spiffe://cluster.local/ns/default/sa/bookinfo-ratings")
	first, second := ca.Issue(t, id, time.Hour), ca.Issue(t, id, time.Hour)
	srv, sock := startSDS(t)
	srv.push <- secrets(t, "1", ca, first)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	node := &corev3.Node{Id: "sidecar~127.0.0.1~ratings-v1.default~default.svc.cluster.local"}
	src, err := identity.NewSDS(ctx, sock, node, td, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = src.Close() })

	if req := nextRequest(t, srv); len(req.GetResourceNames()) != 2 || req.GetResponseNonce() != "" {
		t.Fatalf("initial request %v, want a subscription to default and ROOTCA", req)
	}
	if ack := nextRequest(t, srv); ack.GetResponseNonce() != "n1" || ack.GetVersionInfo() != "1" || ack.GetErrorDetail() != nil {
		t.Fatalf("after version 1 got %v, want its ACK", ack)
	}
	requireSerial(t, src, first)

	srv.push <- secrets(t, "2", ca, second)
	if ack := nextRequest(t, srv); ack.GetVersionInfo() != "2" || ack.GetErrorDetail() != nil {
		t.Fatalf("after version 2 got %v, want its ACK", ack)
	}
	deadline := time.Now().Add(5 * time.Second)
	for src.Pushes() < 2 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	requireSerial(t, src, second)

	bad := secrets(t, "3", ca, second)
	bad.Resources = bad.Resources[:1]
	def := &tlsv3.Secret{}
	if err := bad.Resources[0].UnmarshalTo(def); err != nil {
		t.Fatal(err)
	}
	def.GetTlsCertificate().PrivateKey = &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: []byte("not a key")}}
	if bad.Resources[0], err = anypb.New(def); err != nil {
		t.Fatal(err)
	}
	srv.push <- bad
	if nack := nextRequest(t, srv); nack.GetErrorDetail() == nil || nack.GetVersionInfo() != "2" || nack.GetResponseNonce() != "n3" {
		t.Fatalf("after a bad version 3 got %v, want a NACK keeping version 2", nack)
	}
	requireSerial(t, src, second)
}

func requireSerial(t *testing.T, src *identity.SDS, want *x509svid.SVID) {
	t.Helper()
	got, err := src.GetX509SVID()
	if err != nil {
		t.Fatal(err)
	}
	if got.Certificates[0].SerialNumber.Cmp(want.Certificates[0].SerialNumber) != 0 {
		t.Fatalf("source serves serial %x, want %x", got.Certificates[0].SerialNumber, want.Certificates[0].SerialNumber)
	}
	if _, err := src.GetX509BundleForTrustDomain(td); err != nil {
		t.Fatal(err)
	}
}
