package envoysds

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
)

// scriptServer answers each stream with the responses of its script and
// records every request it receives.
type scriptServer struct {
	secretv3.UnimplementedSecretDiscoveryServiceServer
	requests chan *discoveryv3.DiscoveryRequest
	// responses are sent one per received request; when they run out the
	// stream fails with Unavailable if failAfter, else blocks.
	responses []*discoveryv3.DiscoveryResponse
	failAfter bool
}

func (s *scriptServer) StreamSecrets(st grpc.BidiStreamingServer[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse]) error {
	for i := 0; ; i++ {
		req, err := st.Recv()
		if err != nil {
			return err
		}
		s.requests <- req
		if i < len(s.responses) {
			if err := st.Send(s.responses[i]); err != nil {
				return err
			}
			continue
		}
		if s.failAfter {
			return status.Error(codes.Unavailable, "scripted failure")
		}
	}
}

func startServer(t *testing.T, srv *scriptServer) *grpc.ClientConn {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "sds.sock")
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	secretv3.RegisterSecretDiscoveryServiceServer(gs, srv)
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	conn, err := Dial(sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func testSecrets(t *testing.T) (def, root *tlsv3.Secret) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	inline := func(b []byte) *corev3.DataSource {
		return &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: b}}
	}
	def = &tlsv3.Secret{Name: "default", Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
		CertificateChain: inline(certPEM), PrivateKey: inline(keyPEM)}}}
	root = &tlsv3.Secret{Name: "ROOTCA", Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
		TrustedCa: inline(certPEM)}}}
	return def, root
}

func response(t *testing.T, version, nonce string, secrets ...*tlsv3.Secret) *discoveryv3.DiscoveryResponse {
	t.Helper()
	resp := &discoveryv3.DiscoveryResponse{VersionInfo: version, Nonce: nonce, TypeUrl: SecretTypeURL}
	for _, s := range secrets {
		a, err := anypb.New(s)
		if err != nil {
			t.Fatal(err)
		}
		resp.Resources = append(resp.Resources, a)
	}
	return resp
}

func testNode() *corev3.Node {
	md, _ := structpb.NewStruct(map[string]any{"ISTIO_VERSION": "1.0.5"})
	return &corev3.Node{Id: "sidecar~10.0.0.1~productpage.default~default.svc.cluster.local", Cluster: "productpage", Metadata: md}
}

func nextRequest(t *testing.T, ch <-chan *discoveryv3.DiscoveryRequest) *discoveryv3.DiscoveryRequest {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(5 * time.Second):
		t.Fatal("no request within 5s")
		return nil
	}
}

func nextUpdate(t *testing.T, c *Client) Update {
	t.Helper()
	select {
	case u := <-c.Updates():
		return u
	case <-time.After(5 * time.Second):
		t.Fatal("no update within 5s")
		return Update{}
	}
}

func run(t *testing.T, c *Client) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

func TestClientACKsAcceptedResponseWithVersionAndNonce(t *testing.T) {
	def, root := testSecrets(t)
	srv := &scriptServer{requests: make(chan *discoveryv3.DiscoveryRequest, 8),
		responses: []*discoveryv3.DiscoveryResponse{response(t, "7", "n1", def, root)}}
	c, err := New(startServer(t, srv), Config{Node: testNode(), ResourceNames: []string{"default", "ROOTCA"}})
	if err != nil {
		t.Fatal(err)
	}
	run(t, c)
	first := nextRequest(t, srv.requests)
	if first.GetTypeUrl() != SecretTypeURL || first.GetNode().GetId() != testNode().GetId() ||
		first.GetNode().GetMetadata().GetFields()["ISTIO_VERSION"].GetStringValue() != "1.0.5" ||
		first.GetResponseNonce() != "" || first.GetVersionInfo() != "" || len(first.GetResourceNames()) != 2 {
		t.Fatalf("initial request = %v", first)
	}
	ack := nextRequest(t, srv.requests)
	if ack.GetVersionInfo() != "7" || ack.GetResponseNonce() != "n1" || ack.GetErrorDetail() != nil {
		t.Fatalf("ACK = %v", ack)
	}
	u := nextUpdate(t, c)
	cert, pool, err := TLS(u.Secrets)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cert.Leaf.Verify(x509.VerifyOptions{Roots: pool}); err != nil {
		t.Fatalf("leaf does not verify against ROOTCA: %v", err)
	}
	if s := c.Stats(); s.ACKs != 1 || s.NACKs != 0 || s.Streams != 1 {
		t.Fatalf("stats = %+v", s)
	}
}

func TestClientNACKsWithLastAcceptedVersion(t *testing.T) {
	def, root := testSecrets(t)
	srv := &scriptServer{requests: make(chan *discoveryv3.DiscoveryRequest, 8),
		responses: []*discoveryv3.DiscoveryResponse{
			response(t, "1", "a", def, root), response(t, "2", "b", def), response(t, "3", "c", def)}}
	var calls atomic.Int32
	c, err := New(startServer(t, srv), Config{Node: testNode(), ResourceNames: []string{"default", "ROOTCA"},
		// Reject exactly the second response.
		Validate: func(map[string]*tlsv3.Secret) error {
			if calls.Add(1) == 2 {
				return errors.New("bad key")
			}
			return nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	run(t, c)
	nextRequest(t, srv.requests) // initial
	if r := nextRequest(t, srv.requests); r.GetVersionInfo() != "1" || r.GetResponseNonce() != "a" {
		t.Fatalf("first ACK = %v", r)
	}
	nack := nextRequest(t, srv.requests)
	if nack.GetVersionInfo() != "1" || nack.GetResponseNonce() != "b" || nack.GetErrorDetail().GetMessage() != "bad key" {
		t.Fatalf("NACK = %v", nack)
	}
	if r := nextRequest(t, srv.requests); r.GetVersionInfo() != "3" || r.GetResponseNonce() != "c" || r.GetErrorDetail() != nil {
		t.Fatalf("ACK after NACK = %v", r)
	}
	if u1, u3 := nextUpdate(t, c), nextUpdate(t, c); u1.Version != "1" || u3.Version != "3" || c.Stats().NACKs != 1 {
		t.Fatalf("updates %q, %q; want 1 then 3 (2 rejected)", u1.Version, u3.Version)
	}
}

func TestClientResubscribesWithLastAcceptedVersion(t *testing.T) {
	def, root := testSecrets(t)
	srv := &scriptServer{requests: make(chan *discoveryv3.DiscoveryRequest, 8), failAfter: true,
		responses: []*discoveryv3.DiscoveryResponse{response(t, "5", "x", def, root)}}
	c, err := New(startServer(t, srv), Config{Node: testNode(), ResourceNames: []string{"default"}, MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	run(t, c)
	nextRequest(t, srv.requests) // initial
	nextRequest(t, srv.requests) // ACK of 5, then the server fails the stream
	nextUpdate(t, c)
	again := nextRequest(t, srv.requests)
	if again.GetVersionInfo() != "5" || again.GetResponseNonce() != "" {
		t.Fatalf("resubscription = %v; want version 5 and no nonce", again)
	}
	if s := c.Stats(); s.Streams < 2 {
		t.Fatalf("streams = %d, want >= 2", s.Streams)
	}
}

func TestTLSRejectsMissingMaterial(t *testing.T) {
	def, root := testSecrets(t)
	if _, _, err := TLS(map[string]*tlsv3.Secret{"default": def}); err == nil {
		t.Fatal("TLS without ROOTCA: want error")
	}
	if _, err := Certificate(root); err == nil {
		t.Fatal("Certificate(ROOTCA): want error")
	}
	if _, err := CertPool(def); err == nil {
		t.Fatal("CertPool(default): want error")
	}
}

func TestNewValidatesConfig(t *testing.T) {
	if _, err := New(nil, Config{ResourceNames: []string{"default"}}); err == nil {
		t.Fatal("New without node: want error")
	}
	if _, err := New(nil, Config{Node: testNode()}); err == nil {
		t.Fatal("New without resource names: want error")
	}
}
