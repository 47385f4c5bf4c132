// Package catest runs the real Castellan CA in-process for the agent's
// tests and benchmarks: ca/authority (with its journal, so it rotates),
// ca/ledger, join tokens and registration entries (ca/authn, ca/authz) on
// bbolt files in the test's temporary directory, and ca/server's gRPC
// services, served on 127.0.0.1 over the server's own TLS (mutual TLS
// with agent SVIDs). Nothing is reimplemented: what the agent gets is what
// the real CA signs, refuses and pushes.
//
// On top of it, as SPIRE's fake datastore wraps the real one, catest
// injects faults between the network and the real server (faults.go):
// a call fails with a chosen status, is delayed, or hangs until the caller
// gives up; replicas (replica.go) can be stopped, marked NOT_SERVING, or
// made to fail on their own; and calls and signed SVIDs are counted.
package catest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	cav1 "github.com/castellan-dev/castellan/api/castellan/ca/v1"
	"github.com/castellan-dev/castellan/ca/authn"
	"github.com/castellan-dev/castellan/ca/authority"
	"github.com/castellan-dev/castellan/ca/authz"
	"github.com/castellan-dev/castellan/ca/ledger"
	"github.com/castellan-dev/castellan/ca/server"
	"github.com/castellan-dev/castellan/ca/store/boltstore"
	"github.com/castellan-dev/castellan/internal/clock"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
)

// CA is the real CA with fault injection. Its methods are safe for
// concurrent use.
type CA struct {
	// TrustDomain of every identity the CA signs.
	TrustDomain spiffeid.TrustDomain

	auth    *authority.Authority
	ledger  *ledger.Ledger
	tokens  *authn.JoinTokens
	entries *authz.Entries
	srv     *server.Server
	grpc    *grpc.Server // the real server's services, behind every replica
	faults  faults       // faults of every replica (faults.go)

	mu      sync.Mutex
	primary *Replica // the server Start, Stop and Addr work on
}

// Config is New's settings; its zero value is a CA on the wall clock
// issuing one-hour agent SVIDs.
type Config struct {
	// Clock is what the CA signs, expires join tokens and revocations by
	// (nil: the wall clock). TLS handshakes check the server's and agents'
	// SVIDs against the wall clock, so a test that serves the CA keeps its
	// clock near it; clock.Frozen(t) makes a CA that only issues SVIDs
	// dated t.
	Clock clock.Clock
	// AgentTTL is the lifetime of agent SVIDs (0: one hour).
	AgentTTL time.Duration
}

// New starts the CA for td with a new root and intermediate; it is served
// by Start, Serve or ServeAt, and closed at the end of the test. cfg, at
// most one, changes its settings.
func New(t testing.TB, td spiffeid.TrustDomain, cfg ...Config) *CA {
	t.Helper()
	var o Config
	if len(cfg) > 1 {
		t.Fatalf("catest.New: %d configs, want at most one", len(cfg))
	}
	if len(cfg) == 1 {
		o = cfg[0]
	}
	o.Clock = clock.OrSystem(o.Clock)
	if o.AgentTTL == 0 {
		o.AgentTTL = time.Hour
	}
	ctx := context.Background()
	dir := t.TempDir()
	ca := &CA{TrustDomain: td}
	ca.auth = openAuthority(t, dir, td, o.Clock)
	led, err := ledger.Open(filepath.Join(dir, "ledger.db"), ledger.Config{Clock: o.Clock})
	check(t, err)
	t.Cleanup(func() { _ = led.Close() })
	ca.ledger = led
	registry := openBolt(t, filepath.Join(dir, "registry.db"))
	ca.tokens, err = authn.NewJoinTokens(ctx, registry, authn.JoinTokensConfig{Clock: o.Clock})
	check(t, err)
	ca.entries, err = authz.NewEntries(ctx, registry, td, authz.EntriesConfig{MaxTTL: ca.auth.MaxTTL(), Clock: o.Clock})
	check(t, err)
	t.Cleanup(func() { _ = ca.entries.Close() })
	ca.srv, err = server.New(ctx, server.Config{
		Authority: ca.auth, Ledger: led, Attestor: &authn.JoinTokenAttestor{Tokens: ca.tokens},
		Tokens: ca.tokens, Entries: ca.entries, AgentTTL: o.AgentTTL, Clock: o.Clock,
	})
	check(t, err)
	ca.grpc = ca.srv.GRPCServer()
	ca.run(t)
	return ca
}

// run runs the server's follower (rotation, its own SVID) until the end
// of the test, then stops it.
func (ca *CA) run(t testing.TB) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = ca.srv.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		ca.grpc.Stop()
	})
}

// openAuthority opens a managed authority with its journal in dir.
func openAuthority(t testing.TB, dir string, td spiffeid.TrustDomain, clk clock.Clock) *authority.Authority {
	t.Helper()
	journal := openBolt(t, filepath.Join(dir, "authority.db"))
	auth, err := authority.Open(context.Background(), authority.Config{
		TrustDomain: td, DataDir: dir, Journal: journal, Clock: clk,
	})
	check(t, err)
	return auth
}

// openBolt opens a bbolt store closed at the end of the test.
func openBolt(t testing.TB, path string) *boltstore.DB {
	t.Helper()
	db, err := boltstore.Open(path)
	check(t, err)
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// Bundle returns the CA's trust bundle.
func (ca *CA) Bundle() *x509bundle.Bundle { return ca.auth.Bundle() }

// WriteBundle writes the trust bundle as PEM to path, as castellan-server
// writes bundle.pem.
func (ca *CA) WriteBundle(t testing.TB, path string) {
	t.Helper()
	var b []byte
	for _, c := range ca.Bundle().X509Authorities() {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	check(t, os.WriteFile(path, b, 0o644))
}

// Issue has the authority sign a workload SVID for id with a fresh P-256
// key, valid for ttl from the CA's clock (backdated as the CA backdates),
// chained leaf then intermediate; it bypasses the server and the ledger.
func (ca *CA) Issue(t testing.TB, id spiffeid.ID, ttl time.Duration) *x509svid.SVID {
	t.Helper()
	svid, err := ca.Sign(id, ttl)
	check(t, err)
	return svid
}

// Sign is Issue for goroutines other than the test's: it returns the
// error.
func (ca *CA) Sign(id spiffeid.ID, ttl time.Duration) (*x509svid.SVID, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{id.URL()}}, key)
	if err != nil {
		return nil, err
	}
	csr, err := ca.auth.ParseWorkloadCSR(der)
	if err != nil {
		return nil, err
	}
	iss, err := ca.auth.Sign(context.Background(), csr, id, ttl)
	if err != nil {
		return nil, err
	}
	return &x509svid.SVID{ID: id, Certificates: iss.Chain, PrivateKey: key}, nil
}

// RotateIntermediate prepares a new intermediate under the same root and
// activates it at once (as castellanctl authority prepare and activate
// --force do); it returns the intermediate that signed until then. The
// server follows: its own certificate is re-issued, and new SVIDs chain
// to the new intermediate.
func (ca *CA) RotateIntermediate(t testing.TB) *x509.Certificate {
	t.Helper()
	ctx := context.Background()
	old := ca.auth.Intermediate()
	next, err := ca.auth.Prepare(ctx, false)
	check(t, err)
	_, err = ca.auth.Activate(ctx, next.ID, true)
	check(t, err)
	return old
}

// Taint taints the authority whose signing certificate is inter (one that
// no longer signs: see RotateIntermediate); the server pushes it to every
// SyncAgent stream.
func (ca *CA) Taint(t testing.TB, inter *x509.Certificate) {
	t.Helper()
	ctx := context.Background()
	infos, err := ca.auth.Authorities(ctx)
	check(t, err)
	for _, in := range infos {
		if len(in.Chain) > 0 && in.Chain[0].Equal(inter) {
			_, err := ca.auth.Taint(ctx, in.ID)
			check(t, err)
			return
		}
	}
	t.Fatalf("catest: no authority signs with %s", inter.Subject)
}

// JoinToken creates a one-time join token for node.
func (ca *CA) JoinToken(t testing.TB, node string) string {
	t.Helper()
	tok, _, err := ca.tokens.Create(context.Background(), node, time.Hour)
	check(t, err)
	return tok
}

// AddEntry registers e (its ID is chosen by the CA) and returns the
// stored entry; syncing agents of its node receive it.
func (ca *CA) AddEntry(t testing.TB, e *cav1.Entry) *cav1.Entry {
	t.Helper()
	stored, err := ca.entries.Create(context.Background(), e)
	check(t, err)
	return stored
}

// DeleteEntry removes an entry; syncing agents of its node drop it.
func (ca *CA) DeleteEntry(t testing.TB, id string) {
	t.Helper()
	check(t, ca.entries.Delete(context.Background(), id))
}

// Revoke revokes the certificate with serial s (any hex form) in the
// ledger; the server pushes the revocation to every syncing agent.
func (ca *CA) Revoke(t testing.TB, s string) {
	t.Helper()
	_, err := ca.ledger.Revoke(context.Background(), s, "catest")
	check(t, err)
}

// Intermediates returns a pool of the certificates of a served chain
// (DER, leaf first) after its leaf: what a peer verifying the chain has.
func Intermediates(t testing.TB, chain [][]byte) *x509.CertPool {
	t.Helper()
	pool := x509.NewCertPool()
	for _, der := range chain[min(1, len(chain)):] {
		c, err := x509.ParseCertificate(der)
		check(t, err)
		pool.AddCert(c)
	}
	return pool
}

// check fails the test on err.
func check(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("catest: %v", err)
	}
}
