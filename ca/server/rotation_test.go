package server

import (
	"bytes"
	"context"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"path/filepath"
	"strings"
	"testing"
	"time"

	adminv1 "github.com/castellan-dev/castellan/api/castellan/admin/v1"
	cav1 "github.com/castellan-dev/castellan/api/castellan/ca/v1"
	"github.com/castellan-dev/castellan/ca/authn"
	"github.com/castellan-dev/castellan/ca/authority"
	"github.com/castellan-dev/castellan/ca/store/boltstore"
	"github.com/castellan-dev/castellan/internal/clock/clocktest"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// rotatingEnv is a server whose authority keeps a journal (publish delay
// 1h), with Run (and so the authority follower) running.
func rotatingEnv(t *testing.T) *env {
	t.Helper()
	clock := &fakeClock{now: time.Now().Truncate(time.Second)}
	journal, err := boltstore.Open(filepath.Join(t.TempDir(), "authority.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { journal.Close() })
	auth, err := authority.Open(context.Background(), authority.Config{TrustDomain: testTD, DataDir: t.TempDir(),
		Journal: journal, PublishDelay: time.Hour, Clock: clocktest.Func(clock.Now)})
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, func(c *Config) { c.Authority = auth })
	e.auth = auth
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = e.srv.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return e
}

// syncStates opens a SyncAgent stream and delivers its states.
func syncStates(t *testing.T, c cav1.CertificateAuthorityServiceClient) <-chan *cav1.AgentState {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	s, err := c.SyncAgent(ctx, &cav1.SyncAgentRequest{})
	if err != nil {
		t.Fatal(err)
	}
	out := make(chan *cav1.AgentState, 16)
	go func() {
		for {
			resp, err := s.Recv()
			if err != nil {
				close(out)
				return
			}
			out <- resp.GetState()
		}
	}()
	return out
}

// nextState waits for a state satisfying cond.
func nextState(t *testing.T, ch <-chan *cav1.AgentState, what string, cond func(*cav1.AgentState) bool) *cav1.AgentState {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case st, ok := <-ch:
			if !ok {
				t.Fatalf("SyncAgent stream ended waiting for %s", what)
			}
			if cond(st) {
				return st
			}
		case <-timeout:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// serverChain connects with TLS and returns the chain the server presents.
func (e *env) serverChain(t *testing.T, roots *x509bundle.Bundle) []*x509.Certificate {
	t.Helper()
	tc := tlsconfig.TLSClientConfig(roots, tlsconfig.AuthorizeID(authn.ServerID(testTD)))
	conn, err := tls.Dial("tcp", e.addr, tc)
	if err != nil {
		t.Fatalf("TLS to the server: %v", err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates
}

// TestServerFollowsAuthorityRotation drives a root rotation through the
// authority and checks every surface of the server: the bundle of
// SyncAgent, WatchBundle and GetBundle, the server's own certificate, the
// pool client certificates are verified against, the tainted authorities
// pushed to agents, the expiry gauges, and the revocation of the old root.
func TestServerFollowsAuthorityRotation(t *testing.T) {
	e := rotatingEnv(t)
	ctx := context.Background()
	first := e.auth.Snapshot()
	oldAgent := e.attest(t, "node-old")
	oldClient := cav1.NewCertificateAuthorityServiceClient(e.mustDial(t, oldAgent, first.Roots))
	states := syncStates(t, oldClient)
	st := nextState(t, states, "first state", func(*cav1.AgentState) bool { return true })
	if len(st.GetBundle().GetX509Authorities()) != 1 || len(st.GetTaintedAuthorities()) != 0 {
		t.Fatalf("first state: %d roots, %d tainted", len(st.GetBundle().GetX509Authorities()), len(st.GetTaintedAuthorities()))
	}
	seq := st.GetBundle().GetSequence()

	// Prepare under a new root: published at once, nothing signs with it.
	next, err := e.auth.Prepare(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	st = nextState(t, states, "the new root", func(s *cav1.AgentState) bool { return len(s.GetBundle().GetX509Authorities()) == 2 })
	if st.GetBundle().GetSequence() != seq+1 {
		t.Fatalf("bundle sequence %d after one change, want %d", st.GetBundle().GetSequence(), seq+1)
	}
	gb, err := oldClient.GetBundle(ctx, &cav1.GetBundleRequest{})
	if err != nil || len(gb.GetBundle().GetX509Authorities()) != 2 {
		t.Fatalf("GetBundle after prepare: %v %v", gb, err)
	}
	if chain := e.serverChain(t, e.auth.Bundle()); !chain[1].Equal(first.Chain[0]) {
		t.Fatal("the server certificate changed before the new authority signs")
	}

	// Activate (forced: TLS peers check certificates against the wall
	// clock, so the test does not move the authority's past the publish
	// delay): the server re-issues its certificate under the new root.
	if _, err := e.auth.Activate(ctx, next.ID, false); err == nil {
		t.Fatal("activation before the publish delay was accepted")
	}
	if _, err := e.auth.Activate(ctx, next.ID, true); err != nil {
		t.Fatal(err)
	}
	newRoot := x509bundle.FromX509Authorities(testTD, next.Roots)
	waitFor(t, "the server certificate under the new authority", func() bool {
		chain := e.serverChain(t, e.auth.Bundle())
		return chain[1].Equal(next.Chain[0])
	})
	e.serverChain(t, newRoot) // verifies with the new root alone
	if got := testutil.ToFloat64(e.srv.metrics.caExpiry.WithLabelValues("intermediate")); got != float64(next.Chain[0].NotAfter.Unix()) {
		t.Fatalf("intermediate expiry gauge %v, want the new intermediate's", got)
	}
	// An agent whose SVID chains to the new root is accepted over mTLS.
	newAgent := e.attest(t, "node-new")
	if !newAgent.Certificates[1].Equal(next.Chain[0]) {
		t.Fatal("the new agent SVID is not signed by the new authority")
	}
	newClient := cav1.NewCertificateAuthorityServiceClient(e.mustDial(t, newAgent, e.auth.Snapshot().Roots))
	if _, err := newClient.GetBundle(ctx, &cav1.GetBundleRequest{}); err != nil {
		t.Fatalf("agent under the new root refused: %v", err)
	}

	// Taint the old authority: pushed to agents, the bundle unchanged.
	if _, err := e.auth.Taint(ctx, first.ActiveID); err != nil {
		t.Fatal(err)
	}
	st = nextState(t, states, "the taint", func(s *cav1.AgentState) bool { return len(s.GetTaintedAuthorities()) == 1 })
	if !bytes.Equal(st.GetTaintedAuthorities()[0], first.Chain[0].Raw) || len(st.GetBundle().GetX509Authorities()) != 2 {
		t.Fatal("the tainted authority pushed is not the old intermediate, or the bundle changed")
	}

	// Revoke it: its root leaves the bundle, and a client certificate
	// under it is no longer accepted.
	if _, err := e.auth.Revoke(ctx, first.ActiveID, true); err != nil {
		t.Fatal(err)
	}
	nextState(t, states, "the old root gone", func(s *cav1.AgentState) bool {
		return len(s.GetBundle().GetX509Authorities()) == 1 && len(s.GetTaintedAuthorities()) == 0
	})
	waitFor(t, "the old agent SVID refused", func() bool {
		conn := e.mustDial(t, oldAgent, e.auth.Snapshot().Roots)
		_, err := cav1.NewCertificateAuthorityServiceClient(conn).GetBundle(ctx, &cav1.GetBundleRequest{})
		return err != nil
	})
}

// mustDial connects with svid over mTLS, verifying the server with roots.
func (e *env) mustDial(t *testing.T, svid *x509svid.SVID, roots []*x509.Certificate) *grpc.ClientConn {
	t.Helper()
	conn, _ := e.dial(t, tlsconfig.MTLSClientConfig(svid, x509bundle.FromX509Authorities(testTD, roots), tlsconfig.AuthorizeID(authn.ServerID(testTD))))
	return conn
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestAuthorityRPCsOverTCPOnlyForAdmins: a stolen agent SVID cannot drive
// the CA's authorities; an admin identity can, and refusals carry the
// authority package's status and explanation.
func TestAuthorityRPCsOverTCPOnlyForAdmins(t *testing.T) {
	e := rotatingEnv(t)
	ctx := context.Background()
	agent := adminv1.NewAdminServiceClient(e.mustDial(t, e.attest(t, "node-a"), e.auth.Snapshot().Roots))
	if _, err := agent.PrepareAuthority(ctx, &adminv1.PrepareAuthorityRequest{NewRoot: true}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("PrepareAuthority by an agent: %v, want PermissionDenied", err)
	}
	if _, err := agent.RevokeAuthority(ctx, &adminv1.RevokeAuthorityRequest{Id: e.auth.Snapshot().ActiveID, Force: true}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("RevokeAuthority by an agent: %v, want PermissionDenied", err)
	}
	if list, _ := e.auth.Authorities(ctx); len(list) != 1 {
		t.Fatalf("%d authorities after refused calls, want 1", len(list))
	}
	admin := adminv1.NewAdminServiceClient(e.mustDial(t, e.attest(t, "admin-node"), e.auth.Snapshot().Roots))
	prep, err := admin.PrepareAuthority(ctx, &adminv1.PrepareAuthorityRequest{NewRoot: true})
	if err != nil || prep.GetAuthority().GetState() != "prepared" || prep.GetAuthority().GetActivatableAt() == nil {
		t.Fatalf("PrepareAuthority by an admin: %v %v", prep, err)
	}
	_, err = admin.ActivateAuthority(ctx, &adminv1.ActivateAuthorityRequest{Id: prep.GetAuthority().GetId()})
	if st := status.Convert(err); st.Code() != codes.FailedPrecondition || !strings.Contains(st.Message(), "publish delay") {
		t.Fatalf("early ActivateAuthority: %v, want FailedPrecondition naming the publish delay", err)
	}
	_, err = admin.TaintAuthority(ctx, &adminv1.TaintAuthorityRequest{Id: "nope"})
	if status.Code(err) != codes.NotFound {
		t.Fatalf("TaintAuthority of an unknown ID: %v, want NotFound", err)
	}
	if _, err = admin.RevokeAuthority(ctx, &adminv1.RevokeAuthorityRequest{}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("RevokeAuthority without ID: %v, want InvalidArgument", err)
	}
	list, err := admin.ListAuthorities(ctx, &adminv1.ListAuthoritiesRequest{})
	if err != nil || len(list.GetAuthorities()) != 2 || list.GetAuthorities()[0].GetState() != "active" {
		t.Fatalf("ListAuthorities: %v %v", list, err)
	}
}

// TestAgentRenewsEarlyOnlyUnderATaintedAuthority: an agent SVID may not be
// renewed before its half-life, unless a tainted authority signed it; its
// replacement, under the active authority, is held to half-life again.
func TestAgentRenewsEarlyOnlyUnderATaintedAuthority(t *testing.T) {
	e := rotatingEnv(t)
	ctx := context.Background()
	first := e.auth.Snapshot()
	svid := e.attest(t, "node-a")
	renew := func(s *x509svid.SVID) (*x509svid.SVID, error) {
		key := ecKey(t, elliptic.P256())
		resp, err := cav1.NewCertificateAuthorityServiceClient(e.mustDial(t, s, e.auth.Snapshot().Roots)).
			RenewAgent(ctx, &cav1.RenewAgentRequest{Csr: agentCSR(t, key)})
		if err != nil {
			return nil, err
		}
		return svidOf(t, resp.GetSvid(), key), nil
	}
	if _, err := renew(svid); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("early renewal: %v, want ResourceExhausted", err)
	}
	next, err := e.auth.Prepare(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.auth.Activate(ctx, next.ID, true); err != nil {
		t.Fatal(err)
	}
	if _, err := renew(svid); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("early renewal under an old (not tainted) authority: %v, want ResourceExhausted", err)
	}
	if _, err := e.auth.Taint(ctx, first.ActiveID); err != nil {
		t.Fatal(err)
	}
	var renewed *x509svid.SVID
	waitFor(t, "the early renewal under the tainted authority", func() bool {
		renewed, err = renew(svid)
		return err == nil
	})
	if !renewed.Certificates[1].Equal(next.Chain[0]) {
		t.Fatal("the replacement is not signed by the active authority")
	}
	if _, err := renew(renewed); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("early renewal of the replacement: %v, want ResourceExhausted", err)
	}
}
