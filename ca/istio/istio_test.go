package istio_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	cav1 "github.com/castellan-dev/castellan/api/castellan/ca/v1"
	"github.com/castellan-dev/castellan/ca/authn"
	"github.com/castellan-dev/castellan/ca/authority"
	"github.com/castellan-dev/castellan/ca/authz"
	"github.com/castellan-dev/castellan/ca/istio"
	"github.com/castellan-dev/castellan/ca/ledger"
	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/ca/server"
	"github.com/castellan-dev/castellan/ca/store/boltstore"
	"github.com/castellan-dev/castellan/integration/kubetest"
	"github.com/castellan-dev/castellan/internal/serial"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
	pb "istio.io/api/security/v1alpha1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

var td = spiffeid.RequireTrustDomainFromString("cluster.local")

// caEnv is a Castellan CA serving the Istio API on 127.0.0.1.
type caEnv struct {
	auth    *authority.Authority
	ledger  *ledger.Ledger
	entries *authz.Entries
	addr    string
	metrics *prometheus.Registry // the server's
}

func newCA(t *testing.T, cfg istio.Config) *caEnv {
	t.Helper()
	auth, err := authority.New(authority.Config{TrustDomain: td, MaxTTL: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return newCAWith(t, cfg, auth)
}

// newCAWith is newCA with the given authority.
func newCAWith(t *testing.T, cfg istio.Config, auth *authority.Authority) *caEnv {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	led, err := ledger.Open(filepath.Join(dir, "ledger.db"), ledger.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { led.Close() })
	db, err := boltstore.Open(filepath.Join(dir, "registry.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	tokens, err := authn.NewJoinTokens(ctx, db, authn.JoinTokensConfig{})
	if err != nil {
		t.Fatal(err)
	}
	entries, err := authz.NewEntries(ctx, db, td, authz.EntriesConfig{MaxTTL: auth.MaxTTL()})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	srv, err := server.New(ctx, server.Config{Authority: auth, Ledger: led, Registry: reg,
		Attestor: &authn.JoinTokenAttestor{Tokens: tokens}, Tokens: tokens, Entries: entries})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Server, cfg.Authority, cfg.Ledger = srv, auth, led
	svc, err := istio.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv.ServePublic(istio.ServiceName, svc.Register)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := srv.GRPCServer()
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)
	return &caEnv{auth: auth, ledger: led, entries: entries, addr: lis.Addr().String(), metrics: reg}
}

// client returns istio.io/api's generated client over TLS that verifies
// the CA against its trust bundle, presenting svid if not nil.
func (e *caEnv) client(t *testing.T, svid *x509svid.SVID) pb.IstioCertificateServiceClient {
	t.Helper()
	var tc *tls.Config
	if svid != nil {
		tc = tlsconfig.MTLSClientConfig(svid, e.auth.Bundle(), tlsconfig.AuthorizeID(authn.ServerID(td)))
	} else {
		tc = tlsconfig.TLSClientConfig(e.auth.Bundle(), tlsconfig.AuthorizeID(authn.ServerID(td)))
	}
	conn, err := grpc.NewClient(e.addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return pb.NewIstioCertificateServiceClient(conn)
}

func withToken(token string) context.Context {
	return metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+token, "ClusterID", "Kubernetes")
}

// csrPEM returns a PEM CSR for id (as istio-agent builds it: the SPIFFE ID
// as the URI SAN) and its key.
func csrPEM(t *testing.T, id string) (string, crypto.Signer) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(id)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{u}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})), key
}

func request(csr string, ttl time.Duration, impersonate string) *pb.IstioCertificateRequest {
	md := &structpb.Struct{Fields: map[string]*structpb.Value{"CertSigner": structpb.NewStringValue("")}}
	if impersonate != "" {
		md.Fields[istio.ImpersonatedIdentity] = structpb.NewStringValue(impersonate)
	}
	return &pb.IstioCertificateRequest{Csr: csr, ValidityDuration: int64(ttl / time.Second), Metadata: md}
}

// verifyChain checks the response shape (leaf, intermediates, roots last)
// and verifies the leaf with go-spiffe against the roots of the last
// element, returning the SVID.
func verifyChain(t *testing.T, resp *pb.IstioCertificateResponse, key crypto.Signer) *x509svid.SVID {
	t.Helper()
	chain := resp.GetCertChain()
	if len(chain) < 3 {
		t.Fatalf("cert_chain has %d elements, want leaf, intermediate and root", len(chain))
	}
	var certs []*x509.Certificate
	for i, p := range chain[:len(chain)-1] {
		block, rest := pem.Decode([]byte(p))
		if block == nil || len(rest) != 0 {
			t.Fatalf("cert_chain[%d] is not exactly one PEM certificate", i)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		certs = append(certs, c)
	}
	roots, err := x509bundle.Parse(td, []byte(chain[len(chain)-1]))
	if err != nil {
		t.Fatalf("last element is not the roots: %v", err)
	}
	if !roots.X509Authorities()[0].IsCA || roots.X509Authorities()[0].Subject.String() != roots.X509Authorities()[0].Issuer.String() {
		t.Fatal("last element does not start with a self-signed root")
	}
	id, _, err := x509svid.Verify(certs, roots)
	if err != nil {
		t.Fatalf("x509svid.Verify: %v", err)
	}
	return &x509svid.SVID{ID: id, Certificates: certs, PrivateKey: key}
}

func wantCode(t *testing.T, err error, code codes.Code) {
	t.Helper()
	if status.Code(err) != code {
		t.Fatalf("got %v, want %s", err, code)
	}
}

func TestCreateCertificateKubernetes(t *testing.T) {
	env := kubetest.Start(t)
	env.CreateNamespace("bookinfo")
	env.CreateNamespace("istio-system")
	env.CreateServiceAccount("bookinfo", "bookinfo-reviews")
	env.CreateServiceAccount("bookinfo", "bookinfo-ratings")
	env.CreateServiceAccount("istio-system", "ztunnel")
	env.CreateNode("node-a")
	env.CreateNode("node-b")
	env.CreatePod("bookinfo", "reviews-v1", "bookinfo-reviews", "node-a")
	env.CreatePod("bookinfo", "ratings-v1", "bookinfo-ratings", "node-b")
	env.CreatePod("istio-system", "ztunnel-a", "ztunnel", "node-a")

	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	reviewer, err := authn.NewTokenReviewer(env.Client(), istio.Audience, authn.TokenReviewConfig{})
	if err != nil {
		t.Fatal(err)
	}
	pods, err := authz.NewPods(env.Client(), td, authz.PodsConfig{})
	if err != nil {
		t.Fatal(err)
	}
	go pods.Run(ctx)
	if err := pods.WaitForSync(ctx); err != nil {
		t.Fatal(err)
	}
	ca := newCA(t, istio.Config{Tokens: reviewer, Pods: pods, TrustedNodeAccounts: []string{"istio-system/ztunnel"}})
	anon := ca.client(t, nil)

	const reviews = "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-reviews"
	reviewsToken := env.PodToken("bookinfo", "bookinfo-reviews", "reviews-v1", istio.Audience, time.Hour)
	var svid *x509svid.SVID

	t.Run("valid token", func(t *testing.T) {
		csr, key := csrPEM(t, reviews)
		resp, err := anon.CreateCertificate(withToken(reviewsToken), request(csr, time.Hour, ""))
		if err != nil {
			t.Fatal(err)
		}
		svid = verifyChain(t, resp, key)
		if svid.ID.String() != reviews {
			t.Fatalf("leaf is %s, want %s", svid.ID, reviews)
		}
		leaf := svid.Certificates[0]
		if d := leaf.NotAfter.Sub(leaf.NotBefore); d < time.Hour || d > time.Hour+5*time.Minute {
			t.Errorf("lifetime %s, want 1h (+ backdating)", d)
		}
		e, err := ca.ledger.Get(ctx, serial.FromBig(leaf.SerialNumber).String())
		if err != nil {
			t.Fatalf("issued certificate not in the ledger: %v", err)
		}
		if e.Kind != entry.KindIssuance || e.SPIFFEID != reviews || e.Node != "node-a" {
			t.Errorf("ledger entry %+v, want issuance of %s on node-a", e.Event, reviews)
		}
	})
	t.Run("CSR for another service account", func(t *testing.T) {
		csr, _ := csrPEM(t, "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-ratings")
		_, err := anon.CreateCertificate(withToken(reviewsToken), request(csr, time.Hour, ""))
		wantCode(t, err, codes.PermissionDenied)
	})
	t.Run("token for audience castellan-ca", func(t *testing.T) {
		tok := env.PodToken("bookinfo", "bookinfo-reviews", "reviews-v1", kubetest.AudienceCastellan, time.Hour)
		csr, _ := csrPEM(t, reviews)
		_, err := anon.CreateCertificate(withToken(tok), request(csr, time.Hour, ""))
		wantCode(t, err, codes.Unauthenticated)
	})
	t.Run("no credentials", func(t *testing.T) {
		csr, _ := csrPEM(t, reviews)
		_, err := anon.CreateCertificate(context.Background(), request(csr, time.Hour, ""))
		wantCode(t, err, codes.Unauthenticated)
	})
	t.Run("TTL above the maximum", func(t *testing.T) {
		csr, _ := csrPEM(t, reviews)
		_, err := anon.CreateCertificate(withToken(reviewsToken), request(csr, 25*time.Hour, ""))
		wantCode(t, err, codes.InvalidArgument)
	})
	t.Run("client certificate renews its identity", func(t *testing.T) {
		if svid == nil {
			t.Fatal("the first subtest obtained no SVID to renew with")
		}
		c := ca.client(t, svid)
		csr, key := csrPEM(t, reviews)
		resp, err := c.CreateCertificate(context.Background(), request(csr, time.Hour, ""))
		if err != nil {
			t.Fatal(err)
		}
		if got := verifyChain(t, resp, key); got.ID.String() != reviews {
			t.Fatalf("renewed %s, want %s", got.ID, reviews)
		}
		csr, _ = csrPEM(t, "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-ratings")
		_, err = c.CreateCertificate(context.Background(), request(csr, time.Hour, ""))
		wantCode(t, err, codes.PermissionDenied)
	})
	t.Run("impersonation by a trusted node account", func(t *testing.T) {
		zt := env.PodToken("istio-system", "ztunnel", "ztunnel-a", istio.Audience, time.Hour)
		csr, key := csrPEM(t, reviews)
		resp, err := anon.CreateCertificate(withToken(zt), request(csr, time.Hour, reviews))
		if err != nil {
			t.Fatal(err)
		}
		if got := verifyChain(t, resp, key); got.ID.String() != reviews {
			t.Fatalf("got %s, want %s", got.ID, reviews)
		}
		// ratings runs on node-b only.
		ratings := "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-ratings"
		csr, _ = csrPEM(t, ratings)
		_, err = anon.CreateCertificate(withToken(zt), request(csr, time.Hour, ratings))
		wantCode(t, err, codes.PermissionDenied)
		// A workload may not impersonate.
		csr, _ = csrPEM(t, reviews)
		_, err = anon.CreateCertificate(withToken(reviewsToken), request(csr, time.Hour, reviews))
		wantCode(t, err, codes.PermissionDenied)
	})
	t.Run("client certificate after its pod is gone", func(t *testing.T) {
		if svid == nil {
			t.Fatal("the first subtest obtained no SVID to renew with")
		}
		if err := env.Client().CoreV1().Pods("bookinfo").Delete(ctx, "reviews-v1", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(30 * time.Second)
		for slices.ContainsFunc(pods.OnNode("node-a"), func(p *corev1.Pod) bool {
			return p.Name == "reviews-v1" && p.DeletionTimestamp == nil
		}) {
			if time.Now().After(deadline) {
				t.Fatal("the pod deletion did not reach the informer within 30s")
			}
			time.Sleep(50 * time.Millisecond)
		}
		csr, _ := csrPEM(t, reviews)
		_, err := ca.client(t, svid).CreateCertificate(context.Background(), request(csr, time.Hour, ""))
		wantCode(t, err, codes.PermissionDenied)
		if msg := status.Convert(err).Message(); !strings.Contains(msg, `no longer assigned to node "node-a"`) {
			t.Errorf("refusal %q does not say the identity is no longer on node-a", msg)
		}
	})
}

// TestCreateCertificateWithoutKubernetes: client certificates work without
// a Kubernetes client while a registration entry assigns their identity to
// the node they were issued to; tokens and impersonation are refused.
func TestCreateCertificateWithoutKubernetes(t *testing.T) {
	ctx := context.Background()
	ca := newCA(t, istio.Config{})
	const id = "spiffe://cluster.local/ns/default/sa/default"
	csr, _ := csrPEM(t, id)
	_, err := ca.client(t, nil).CreateCertificate(withToken("a.b.c"), request(csr, time.Hour, ""))
	wantCode(t, err, codes.Unauthenticated)
	_, err = ca.client(t, nil).CreateCertificate(ctx, request(csr, time.Hour, ""))
	wantCode(t, err, codes.Unauthenticated)

	// An existing workload SVID renews its identity while an entry assigns
	// it to the node the SVID was issued to, recorded with its parent and
	// node, for the entry's TTL.
	ca.entry(t, id, "node-a", 2*time.Hour)
	svid := ca.sign(t, id, "node-a")
	renewed := ca.renew(t, svid, 0)
	e, err := ca.ledger.Get(ctx, serial.FromBig(renewed.Certificates[0].SerialNumber).String())
	if err != nil {
		t.Fatal(err)
	}
	if want := serial.FromBig(svid.Certificates[0].SerialNumber).String(); e.Parent != want || e.Node != "node-a" {
		t.Fatalf("renewal recorded with parent %q node %q, want parent %s on node-a", e.Parent, e.Node, want)
	}
	if d := e.NotAfter.Sub(e.NotBefore); d < 2*time.Hour || d > 2*time.Hour+time.Minute {
		t.Errorf("renewal lifetime %s, want the entry's 2h", d)
	}
	c := ca.client(t, svid)
	// ... but not with impersonation, which this CA does not trust anyone for.
	_, err = c.CreateCertificate(ctx, request(csr, 0, "spiffe://cluster.local/ns/default/sa/other"))
	wantCode(t, err, codes.PermissionDenied)
	// ... nor for longer than the entry allows (the CA's max is 24h).
	_, err = c.CreateCertificate(ctx, request(csr, 3*time.Hour, ""))
	wantCode(t, err, codes.InvalidArgument)
	if !strings.Contains(status.Convert(err).Message(), "TTL of registration entry") {
		t.Errorf("TTL refusal %q does not name the entry's TTL", status.Convert(err).Message())
	}
	grandchild := ca.renew(t, renewed, 2*time.Hour)

	// A revoked SVID is refused, and so is every certificate descended from it.
	if _, err := ca.ledger.Revoke(ctx, serial.FromBig(svid.Certificates[0].SerialNumber).String(), "keyCompromise"); err != nil {
		t.Fatal(err)
	}
	_, err = ca.client(t, svid).CreateCertificate(ctx, request(csr, 0, ""))
	wantCode(t, err, codes.Unauthenticated)
	for _, d := range []*x509svid.SVID{renewed, grandchild} {
		_, err = ca.client(t, d).CreateCertificate(ctx, request(csr, 0, ""))
		wantCode(t, err, codes.PermissionDenied)
		if !strings.Contains(status.Convert(err).Message(), "descends from certificate "+serial.FromBig(svid.Certificates[0].SerialNumber).String()) {
			t.Errorf("refusal %q does not name the revoked ancestor", status.Convert(err).Message())
		}
	}

	// A certificate the ledger never recorded is refused.
	_, err = ca.client(t, ca.signUnlogged(t, id)).CreateCertificate(ctx, request(csr, 0, ""))
	wantCode(t, err, codes.Unauthenticated)
}

// TestRenewalNeedsAnAssignedIdentity: once the entry is deleted, or for a
// certificate issued to another node, a client certificate renews nothing.
func TestRenewalNeedsAnAssignedIdentity(t *testing.T) {
	ctx := context.Background()
	ca := newCA(t, istio.Config{})
	const id = "spiffe://cluster.local/ns/default/sa/default"
	csr, _ := csrPEM(t, id)
	ent := ca.entry(t, id, "node-a", 0)
	onA, onB := ca.sign(t, id, "node-a"), ca.sign(t, id, "node-b")
	ca.renew(t, onA, 0)
	_, err := ca.client(t, onB).CreateCertificate(ctx, request(csr, 0, ""))
	wantCode(t, err, codes.PermissionDenied)
	if msg := status.Convert(err).Message(); !strings.Contains(msg, `no longer assigned to node "node-b"`) {
		t.Errorf("refusal %q does not say the identity is not assigned on node-b", msg)
	}
	if err := ca.entries.Delete(ctx, ent.Id); err != nil {
		t.Fatal(err)
	}
	_, err = ca.client(t, onA).CreateCertificate(ctx, request(csr, 0, ""))
	wantCode(t, err, codes.PermissionDenied)
}

// TestRenewalLineageIsBounded: a lineage longer than MaxRenewalGenerations
// is refused, so the ancestor walk is bounded.
func TestRenewalLineageIsBounded(t *testing.T) {
	ctx := context.Background()
	ca := newCA(t, istio.Config{})
	const id = "spiffe://cluster.local/ns/default/sa/default"
	ca.entry(t, id, "node-a", 0)
	// Record a long lineage straight in the ledger (as renewals would).
	svid := ca.sign(t, id, "node-a")
	for range istio.MaxRenewalGenerations {
		svid = ca.signChild(t, id, "node-a", svid)
	}
	csr, _ := csrPEM(t, id)
	_, err := ca.client(t, svid).CreateCertificate(ctx, request(csr, 0, ""))
	wantCode(t, err, codes.OK)
	svid = ca.signChild(t, id, "node-a", svid)
	_, err = ca.client(t, svid).CreateCertificate(ctx, request(csr, 0, ""))
	wantCode(t, err, codes.PermissionDenied)
}

// entry creates a registration entry.
func (e *caEnv) entry(t *testing.T, id, node string, ttl time.Duration) *cav1.Entry {
	t.Helper()
	ent, err := e.entries.Create(context.Background(), &cav1.Entry{SpiffeId: id, Node: node,
		TtlSeconds: int64(ttl / time.Second), Selectors: []*cav1.Selector{{Type: "unix", Value: "uid:1000"}}})
	if err != nil {
		t.Fatal(err)
	}
	return ent
}

// renew renews svid's identity with svid over the Istio API.
func (e *caEnv) renew(t *testing.T, svid *x509svid.SVID, ttl time.Duration) *x509svid.SVID {
	t.Helper()
	csr, key := csrPEM(t, svid.ID.String())
	resp, err := e.client(t, svid).CreateCertificate(context.Background(), request(csr, ttl, ""))
	if err != nil {
		t.Fatalf("renewal with serial %s: %v", serial.FromBig(svid.Certificates[0].SerialNumber).String(), err)
	}
	return verifyChain(t, resp, key)
}

// sign issues an SVID for id on node straight from the authority,
// recorded in the ledger.
func (e *caEnv) sign(t *testing.T, id, node string) *x509svid.SVID {
	t.Helper()
	return e.signWith(t, id, node, "", true)
}

// signChild records an SVID renewed from parent, as Istio renewals are.
func (e *caEnv) signChild(t *testing.T, id, node string, parent *x509svid.SVID) *x509svid.SVID {
	t.Helper()
	return e.signWith(t, id, node, serial.FromBig(parent.Certificates[0].SerialNumber).String(), true)
}

// signUnlogged issues an SVID the ledger does not record.
func (e *caEnv) signUnlogged(t *testing.T, id string) *x509svid.SVID {
	t.Helper()
	return e.signWith(t, id, "", "", false)
}

func (e *caEnv) signWith(t *testing.T, id, node, parent string, logged bool) *x509svid.SVID {
	t.Helper()
	p, key := csrPEM(t, id)
	block, _ := pem.Decode([]byte(p))
	csr, err := e.auth.ParseWorkloadCSR(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	iss, err := e.auth.Sign(context.Background(), csr, csr.ID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if !logged {
		return &x509svid.SVID{ID: iss.ID, Certificates: iss.Chain, PrivateKey: key}
	}
	if _, err := e.ledger.Append(context.Background(), entry.Event{Kind: entry.KindIssuance, Serial: serial.FromBig(iss.Serial).String(),
		SPIFFEID: id, Node: node, Parent: parent, NotBefore: iss.NotBefore, NotAfter: iss.NotAfter, CertDER: iss.Chain[0].Raw}); err != nil {
		t.Fatal(err)
	}
	return &x509svid.SVID{ID: iss.ID, Certificates: iss.Chain, PrivateKey: key}
}
