package server

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/url"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	cav1 "github.com/castellan-dev/castellan/api/castellan/ca/v1"
	"github.com/castellan-dev/castellan/ca/authn"
	"github.com/castellan-dev/castellan/ca/authority"
	"github.com/castellan-dev/castellan/ca/authz"
	"github.com/castellan-dev/castellan/ca/ledger"
	"github.com/castellan-dev/castellan/ca/ledger/logkey"
	"github.com/castellan-dev/castellan/ca/server/admin"
	"github.com/castellan-dev/castellan/ca/server/readiness"
	"github.com/castellan-dev/castellan/ca/store"
	"github.com/castellan-dev/castellan/ca/store/boltstore"
	"github.com/castellan-dev/castellan/ca/store/faultstore"
	"github.com/castellan-dev/castellan/internal/clock/clocktest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

var testTD = spiffeid.RequireTrustDomainFromString("cluster.local")

// fakeClock is a settable clock shared by the components under test.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// env is a CA server listening on 127.0.0.1 with a real authority, ledger
// and bbolt registry.
type env struct {
	clock  *fakeClock
	auth   *authority.Authority
	ledger *ledger.Ledger
	// registry is the bbolt store of tokens and entries, which a test
	// can make fail.
	registry *faultstore.DB
	tokens   *authn.JoinTokens
	entries  *authz.Entries
	srv      *Server
	addr     string
	// stores are what readiness pings: the registry and the ledger.
	stores map[string]readiness.Pinger
}

type envOption func(*Config)

func newEnv(t testing.TB, opts ...envOption) *env {
	t.Helper()
	bolt, err := boltstore.Open(filepath.Join(t.TempDir(), "registry.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bolt.Close() })
	return newEnvOn(t, faultstore.Wrap(bolt, false), nil, "", opts...)
}

// newEnvOn is newEnv with its registry (join tokens, entries) in the
// given store, and its ledger in ledgerDB (nil: a bbolt file) signed with
// the key in ledgerKey ("": a new key; replicas of one ledger share one).
func newEnvOn(t testing.TB, registry *faultstore.DB, ledgerDB store.DB, ledgerKey string, opts ...envOption) *env {
	t.Helper()
	dir := t.TempDir()
	clock := &fakeClock{now: time.Now().Truncate(time.Second)}
	auth, err := authority.New(authority.Config{TrustDomain: testTD, Clock: clocktest.Func(clock.Now)})
	if err != nil {
		t.Fatal(err)
	}
	var led *ledger.Ledger
	if ledgerDB == nil {
		led, err = ledger.Open(filepath.Join(dir, "ledger.db"), ledger.Config{Clock: clocktest.Func(clock.Now)})
	} else {
		if ledgerKey == "" {
			ledgerKey = filepath.Join(dir, "ledger.key")
			if _, err := logkey.GenerateKeyFile(ledgerKey, ""); err != nil {
				t.Fatal(err)
			}
		}
		led, err = ledger.New(ledgerDB, ledger.Config{Clock: clocktest.Func(clock.Now), KeyFile: ledgerKey})
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { led.Close() })
	ctx := context.Background()
	tokens, err := authn.NewJoinTokens(ctx, registry, authn.JoinTokensConfig{Clock: clocktest.Func(clock.Now)})
	if err != nil {
		t.Fatal(err)
	}
	entries, err := authz.NewEntries(ctx, registry, testTD, authz.EntriesConfig{MaxTTL: auth.MaxTTL(), Clock: clocktest.Func(clock.Now)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { entries.Close() })
	cfg := Config{
		Authority: auth, Ledger: led, Attestor: &authn.JoinTokenAttestor{Tokens: tokens},
		Tokens: tokens, Entries: entries, Registry: prometheus.NewRegistry(), Clock: clocktest.Func(clock.Now),
		AdminIDs: []spiffeid.ID{spiffeid.RequireFromString("spiffe://cluster.local/castellan/agent/admin-node")},
	}
	for _, o := range opts {
		o(&cfg)
	}
	srv, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := srv.GRPCServer()
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)
	return &env{clock: clock, auth: auth, ledger: led, registry: registry, tokens: tokens, entries: entries, srv: srv, addr: lis.Addr().String(),
		stores: map[string]readiness.Pinger{"registry": registry, "ledger": led}}
}

// monitorReadiness runs the readiness monitor of the env's stores,
// pinging every interval, until ctx ends.
func (e *env) monitorReadiness(t testing.TB, ctx context.Context, interval time.Duration) {
	t.Helper()
	m, err := readiness.New(readiness.Config{Health: e.srv.Health(), Stores: e.stores, Interval: interval, Registry: e.srv.cfg.Registry})
	if err != nil {
		t.Fatal(err)
	}
	go m.Run(ctx)
}

// admin returns the admin API of the env's server, to call directly.
func (e *env) admin() *admin.Service {
	c := e.srv.cfg
	return admin.New(admin.Config{Authority: c.Authority, Ledger: c.Ledger, Tokens: c.Tokens, Entries: c.Entries})
}

func (e *env) bundle() *x509bundle.Bundle { return e.auth.Bundle() }

// dial connects with the given TLS config and returns a CA client.
func (e *env) dial(t testing.TB, tc *tls.Config) (*grpc.ClientConn, cav1.CertificateAuthorityServiceClient) {
	t.Helper()
	conn, err := grpc.NewClient(e.addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn, cav1.NewCertificateAuthorityServiceClient(conn)
}

// anonConn is a connection without a client certificate.
func (e *env) anonConn(t testing.TB) *grpc.ClientConn {
	conn, _ := e.dial(t, tlsconfig.TLSClientConfig(e.bundle(), tlsconfig.AuthorizeID(authn.ServerID(testTD))))
	return conn
}

// anonClient is a client without a client certificate that verifies the
// server's SVID.
func (e *env) anonClient(t testing.TB) cav1.CertificateAuthorityServiceClient {
	_, c := e.dial(t, tlsconfig.TLSClientConfig(e.bundle(), tlsconfig.AuthorizeID(authn.ServerID(testTD))))
	return c
}

// attest joins node with a fresh join token and returns its agent SVID.
func (e *env) attest(t testing.TB, node string) *x509svid.SVID {
	t.Helper()
	ctx := context.Background()
	token, _, err := e.tokens.Create(ctx, node, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	key := ecKey(t, elliptic.P256())
	resp, err := e.anonClient(t).AttestAgent(ctx, &cav1.AttestAgentRequest{
		Attestation: &cav1.AttestAgentRequest_JoinToken{JoinToken: token}, Csr: agentCSR(t, key)})
	if err != nil {
		t.Fatalf("AttestAgent: %v", err)
	}
	return svidOf(t, resp.GetSvid(), key)
}

// agentClient attests node and returns a client that uses its agent SVID.
func (e *env) agentClient(t testing.TB, node string) cav1.CertificateAuthorityServiceClient {
	t.Helper()
	_, c := e.dial(t, e.mtlsConfig(e.attest(t, node)))
	return c
}

func (e *env) mtlsConfig(svid *x509svid.SVID) *tls.Config {
	return tlsconfig.MTLSClientConfig(svid, e.bundle(), tlsconfig.AuthorizeID(authn.ServerID(testTD)))
}

// addEntry assigns id to node.
func (e *env) addEntry(t testing.TB, id, node string) *cav1.Entry {
	t.Helper()
	ent, err := e.entries.Create(context.Background(), &cav1.Entry{SpiffeId: id, Node: node,
		Selectors: []*cav1.Selector{{Type: "unix", Value: "uid:1000"}}})
	if err != nil {
		t.Fatal(err)
	}
	return ent
}

func (e *env) csrCount(result, reason string) float64 {
	return e.metric("castellan_csr_total", "result="+result, "reason="+reason)
}

// metric returns the value of the exported gauge or counter name whose
// labels hold every "label=value" of labels (0 if none).
func (e *env) metric(name string, labels ...string) float64 {
	mfs, err := e.srv.cfg.Registry.Gather()
	if err != nil {
		panic(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			have := map[string]bool{}
			for _, l := range m.GetLabel() {
				have[l.GetName()+"="+l.GetValue()] = true
			}
			if !slices.ContainsFunc(labels, func(l string) bool { return !have[l] }) {
				return m.GetGauge().GetValue() + m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func svidOf(t testing.TB, pb *cav1.X509SVID, key crypto.Signer) *x509svid.SVID {
	t.Helper()
	var chain []*x509.Certificate
	for _, der := range pb.GetCertChain() {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		chain = append(chain, c)
	}
	id, err := x509svid.IDFromCert(chain[0])
	if err != nil {
		t.Fatal(err)
	}
	return &x509svid.SVID{ID: id, Certificates: chain, PrivateKey: key}
}

func ecKey(t testing.TB, c elliptic.Curve) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(c, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func rsaKey(t testing.TB, bits int) *rsa.PrivateKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// csrSpec lists the SANs of a test CSR.
type csrSpec struct {
	uris   []string
	dns    []string
	ips    []net.IP
	emails []string
}

func makeCSR(t testing.TB, key crypto.Signer, spec csrSpec) []byte {
	t.Helper()
	tmpl := &x509.CertificateRequest{DNSNames: spec.dns, IPAddresses: spec.ips, EmailAddresses: spec.emails}
	for _, u := range spec.uris {
		parsed, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, parsed)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func workloadCSR(t testing.TB, key crypto.Signer, id string) []byte {
	return makeCSR(t, key, csrSpec{uris: []string{id}})
}

func agentCSR(t testing.TB, key crypto.Signer) []byte { return makeCSR(t, key, csrSpec{}) }
