package integration_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	pb "istio.io/api/security/v1alpha1"

	"github.com/castellan-dev/castellan/integration/kubetest"
	"github.com/castellan-dev/castellan/integration/testbin"
)

// TestIstioCAAPI runs the real castellan-server with --istio-api against a
// real kube-apiserver and calls it with istio.io/api's generated
// IstioCertificateService client, as istio-agent does: a pod-bound token
// of audience istio-ca in "authorization: Bearer", a PEM CSR naming the
// pod's SPIFFE ID; the answer is leaf, intermediate, root.
func TestIstioCAAPI(t *testing.T) {
	env := kubetest.Start(t)
	var b testbin.Builder
	t.Cleanup(b.Cleanup)
	server := b.Path(t, "castellan-server")
	dir := filepath.Join(t.TempDir(), "srv")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	env.CreateNamespace("bookinfo")
	env.CreateServiceAccount("bookinfo", "bookinfo-details")
	env.CreateNode("node-a")
	env.CreatePod("bookinfo", "details-v1", "bookinfo-details", "node-a")

	listen := k8sFreeAddr(t)
	srv := exec.Command(server, "--data-dir", dir, "--listen", listen, "--http-listen", k8sFreeAddr(t),
		"--trust-domain", k8sTD, "--kubeconfig", env.Kubeconfig(), "--istio-api")
	srvLog := &k8sLog{}
	srv.Stderr = srvLog
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { k8sStop(srv) })
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("castellan-server log:\n%s", srvLog)
		}
	})
	k8sEventually(t, 60*time.Second, "server admin socket", func() bool {
		_, err := os.Stat(filepath.Join(dir, "admin.sock"))
		return err == nil
	})
	td := spiffeid.RequireTrustDomainFromString(k8sTD)
	bundle, err := x509bundle.Load(td, filepath.Join(dir, "bundle.pem"))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(listen, grpc.WithTransportCredentials(credentials.NewTLS(
		tlsconfig.TLSClientConfig(bundle, tlsconfig.AuthorizeID(spiffeid.RequireFromPath(td, "/castellan/server"))))))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := pb.NewIstioCertificateServiceClient(conn)

	const id = "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-details"
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(id)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{u}}, key)
	if err != nil {
		t.Fatal(err)
	}
	req := &pb.IstioCertificateRequest{Csr: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})),
		ValidityDuration: int64((12 * time.Hour) / time.Second)}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := client.CreateCertificate(ctx, req); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("without a token: %v, want Unauthenticated", err)
	}
	tok := env.PodToken("bookinfo", "bookinfo-details", "details-v1", kubetest.AudienceIstio, time.Hour)
	resp, err := client.CreateCertificate(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok), req)
	if err != nil {
		t.Fatal(err)
	}
	chain := resp.GetCertChain()
	if len(chain) != 3 {
		t.Fatalf("cert_chain has %d elements, want leaf, intermediate, root", len(chain))
	}
	var certs []*x509.Certificate
	for _, p := range chain[:2] {
		block, _ := pem.Decode([]byte(p))
		if block == nil {
			t.Fatal("cert_chain element is not PEM")
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		certs = append(certs, c)
	}
	roots, err := x509bundle.Parse(td, []byte(chain[2]))
	if err != nil {
		t.Fatal(err)
	}
	got, _, err := x509svid.Verify(certs, roots)
	if err != nil || got.String() != id {
		t.Fatalf("leaf %v, %v; want %s verified against the root at the end of cert_chain", got, err, id)
	}
	if !roots.HasX509Authority(bundle.X509Authorities()[0]) {
		t.Fatal("the root in cert_chain is not the CA's bundle")
	}
}
