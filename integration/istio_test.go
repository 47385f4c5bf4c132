package integration_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	cav1 "github.com/castellan-dev/castellan/api/castellan/ca/v1"
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

	listen := freeAddr(t)
	srv := exec.Command(server, "--data-dir", dir, "--listen", listen, "--http-listen", freeAddr(t),
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

// TestIstioRenewalIsAuthorizedLikeAnAgent runs the real castellan-server
// with --istio-api (no Kubernetes: client certificates only) and renews a
// workload SVID with itself through CreateCertificate, as istio-agent
// does: the renewal is recorded with its parent serial and node; a TTL
// above the entry's is refused; once an ancestor is revoked, its
// descendants are refused; once the entry is deleted, the identity is no
// longer renewed.
func TestIstioRenewalIsAuthorizedLikeAnAgent(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the real binaries")
	}
	r := newAgentRig(t)
	r.startBanServer(filepath.Join(t.TempDir(), "server.log"), "--istio-api")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const id = "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-details"
	var entries []struct{ ID string }
	if err := json.Unmarshal([]byte(r.ctlRun("entry", "create", "--spiffe-id", id, "--node", "node-i",
		"--selector", "unix:uid:1000", "--ttl", "10m", "-o", "json")), &entries); err != nil || len(entries) != 1 || entries[0].ID == "" {
		t.Fatalf("entry create -o json: %+v %v", entries, err)
	}
	entry := entries[0]
	token := strings.Fields(r.ctlRun("token", "create", "--node", "node-i", "--ttl", "10m"))[0]
	akey, acsr := agentCSR(t)
	att, err := r.caClient(t, nil).AttestAgent(ctx, &cav1.AttestAgentRequest{
		Attestation: &cav1.AttestAgentRequest_JoinToken{JoinToken: token}, Csr: acsr})
	if err != nil {
		t.Fatal(err)
	}
	agent := r.caClient(t, svidFrom(t, att.GetSvid(), akey))
	fromAgent := func() *x509svid.SVID {
		t.Helper()
		key, der := istioCSR(t, id)
		resp, err := agent.SignX509SVID(ctx, &cav1.SignX509SVIDRequest{Csr: der, EntryId: entry.ID})
		if err != nil {
			t.Fatal(err)
		}
		return svidFrom(t, resp.GetSvid(), key)
	}
	istioWith := func(svid *x509svid.SVID, ttl time.Duration) (*x509svid.SVID, error) {
		t.Helper()
		bundle, err := x509bundle.Load(banTD, filepath.Join(r.srvDir, "bundle.pem"))
		if err != nil {
			t.Fatal(err)
		}
		conn, err := grpc.NewClient(r.listen, grpc.WithTransportCredentials(credentials.NewTLS(
			tlsconfig.MTLSClientConfig(svid, bundle, tlsconfig.AuthorizeID(spiffeid.RequireFromPath(banTD, "/castellan/server"))))))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		key, der := istioCSR(t, id)
		resp, err := pb.NewIstioCertificateServiceClient(conn).CreateCertificate(ctx, &pb.IstioCertificateRequest{
			Csr: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})), ValidityDuration: int64(ttl / time.Second)})
		if err != nil {
			return nil, err
		}
		var certs []*x509.Certificate
		for _, p := range resp.GetCertChain()[:len(resp.GetCertChain())-1] {
			b, _ := pem.Decode([]byte(p))
			c, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			certs = append(certs, c)
		}
		return &x509svid.SVID{ID: spiffeid.RequireFromString(id), Certificates: certs, PrivateKey: key}, nil
	}
	wantRefused := func(err error, code codes.Code, text string) {
		t.Helper()
		if status.Code(err) != code || !strings.Contains(err.Error(), text) {
			t.Fatalf("got %v, want %s saying %q", err, code, text)
		}
		t.Logf("refused as a user sees it: %s", status.Convert(err).Message())
	}

	w1 := fromAgent()
	w2, err := istioWith(w1, 0)
	if err != nil {
		t.Fatalf("renewal with the agent-issued SVID: %v", err)
	}
	var shown struct {
		ParentSerial string `json:"parent_serial"`
		Node         string `json:"node"`
	}
	if err := json.Unmarshal([]byte(r.ctlRun("certs", "show", serialHex(w2.Certificates[0]), "-o", "json")), &shown); err != nil ||
		shown.ParentSerial != serialHex(w1.Certificates[0]) || shown.Node != "node-i" {
		t.Fatalf("certs show of the renewal: %+v %v; want parent %s on node-i", shown, err, serialHex(w1.Certificates[0]))
	}
	if d := w2.Certificates[0].NotAfter.Sub(w2.Certificates[0].NotBefore); d > 11*time.Minute {
		t.Fatalf("renewal lifetime %s, want the entry's 10m", d)
	}
	_, err = istioWith(w2, 2*time.Hour)
	wantRefused(err, codes.InvalidArgument, "TTL of registration entry")
	w3, err := istioWith(w2, 5*time.Minute)
	if err != nil {
		t.Fatalf("renewal of the renewal: %v", err)
	}

	// Revoking the first generation cuts off every descendant.
	r.ctlRun("certs", "revoke", serialHex(w1.Certificates[0]), "--reason", "keyCompromise")
	for _, d := range []*x509svid.SVID{w2, w3} {
		_, err = istioWith(d, 0)
		wantRefused(err, codes.PermissionDenied, "descends from certificate "+serialHex(w1.Certificates[0]))
	}

	// Deleting the entry ends renewals of a fresh, unrevoked SVID.
	w4 := fromAgent()
	if _, err := istioWith(w4, 0); err != nil {
		t.Fatalf("renewal with a fresh SVID: %v", err)
	}
	r.ctlRun("entry", "delete", entry.ID)
	_, err = istioWith(w4, 0)
	wantRefused(err, codes.PermissionDenied, `no longer assigned to node "node-i"`)
}

// istioCSR returns a key and a DER CSR for id.
func istioCSR(t *testing.T, id string) (*ecdsa.PrivateKey, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(id)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{u}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return key, der
}
