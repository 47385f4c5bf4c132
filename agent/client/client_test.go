package client

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/agent/client/catest"
	"github.com/castellan-dev/castellan/agent/upstream"
	cav1 "github.com/castellan-dev/castellan/api/castellan/ca/v1"
	"github.com/castellan-dev/castellan/internal/clock/clocktest"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

var td = spiffeid.RequireTrustDomainFromString("cluster.local")

func newClient(t *testing.T, ca *catest.CA, dir string, clock *clocktest.Clock) *Client {
	t.Helper()
	c, err := New(Config{Address: ca.Addr(), TrustDomain: td, Bundle: ca.Bundle(), DataDir: dir, Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestBootstrapWithJoinTokenThenRestartWithoutToken(t *testing.T) {
	ca := catest.New(t, td)
	ca.Start(t)
	dir := t.TempDir()
	ctx := t.Context()
	clock := clocktest.NewClock(time.Now())

	c := newClient(t, ca, dir, clock)
	if err := c.Bootstrap(ctx, ca.JoinToken(t, "node-1")); err != nil {
		t.Fatal(err)
	}
	want := spiffeid.RequireFromPath(td, "/castellan/agent/node-1")
	if got := c.AgentSVID().ID; got != want {
		t.Fatalf("agent SVID %s, want %s", got, want)
	}
	fi, err := os.Stat(filepath.Join(dir, "agent.pem"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("agent.pem: %v, mode %v; want 0600", err, fi.Mode().Perm())
	}
	// A restarted agent reuses the persisted SVID and can call the CA
	// over mTLS without a token.
	c2 := newClient(t, ca, dir, clock)
	if err := c2.Bootstrap(ctx, ""); err != nil {
		t.Fatal(err)
	}
	e := ca.AddEntry(t, &cav1.Entry{SpiffeId: "spiffe://cluster.local/ns/a/sa/b", Node: "node-1",
		Selectors: []*cav1.Selector{{Type: "unix", Value: "uid:1000"}}})
	res, err := c2.Sign(ctx, []upstream.Entry{{ID: e.Id, SPIFFEID: spiffeid.RequireFromString(e.SpiffeId)}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 1 || res[0].Err != nil {
		t.Fatalf("Sign: %+v", res)
	}
	if _, _, err := x509svid.Verify(res[0].SVID.Certificates, ca.Bundle()); err != nil {
		t.Fatalf("signed SVID does not verify: %v", err)
	}
	if res[0].LogIndex == nil {
		t.Fatal("the CA's log index of the SVID was lost")
	}
}

func TestBootstrapWithoutTokenOrSVIDSaysWhatToDo(t *testing.T) {
	c, err := New(Config{Address: "127.0.0.1:1", TrustDomain: td, DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	err = c.Bootstrap(t.Context(), "")
	if !errors.Is(err, ErrNoAgentSVID) || !strings.Contains(err.Error(), "--join-token-file") {
		t.Fatalf("err = %v, want ErrNoAgentSVID mentioning --join-token-file", err)
	}
}

func TestExpiredAgentSVIDNeedsNewToken(t *testing.T) {
	ca := catest.New(t, td, catest.Config{AgentTTL: time.Minute})
	ca.Start(t)
	dir := t.TempDir()
	clock := clocktest.NewClock(time.Now())
	c := newClient(t, ca, dir, clock)
	if err := c.Bootstrap(t.Context(), ca.JoinToken(t, "node-1")); err != nil {
		t.Fatal(err)
	}
	clock.Advance(2 * time.Minute)
	c2 := newClient(t, ca, dir, clock)
	err := c2.Bootstrap(t.Context(), "")
	if !errors.Is(err, ErrNoAgentSVID) || !strings.Contains(err.Error(), "expired at") || !strings.Contains(err.Error(), "new join token (--join-token-file") {
		t.Fatalf("err = %v, want an 'expired at ...; start the agent with a new join token' error", err)
	}
	// A fresh token re-bootstraps.
	if err := c2.Bootstrap(t.Context(), ca.JoinToken(t, "node-1")); err != nil {
		t.Fatalf("re-bootstrap with a new token: %v", err)
	}
}

func TestUsedJoinTokenIsRefused(t *testing.T) {
	ca := catest.New(t, td)
	ca.Start(t)
	tok := ca.JoinToken(t, "node-1")
	if err := newClient(t, ca, t.TempDir(), clocktest.NewClock(time.Now())).Bootstrap(t.Context(), tok); err != nil {
		t.Fatal(err)
	}
	if err := newClient(t, ca, t.TempDir(), clocktest.NewClock(time.Now())).Bootstrap(t.Context(), tok); err == nil {
		t.Fatal("second use of a join token succeeded")
	}
}

func TestAgentSVIDRenewedAtHalfLife(t *testing.T) {
	// The CA reads the agent's clock: it refuses a renewal before
	// half-life by its own.
	clock := clocktest.NewClock(time.Now())
	ca := catest.New(t, td, catest.Config{AgentTTL: time.Hour, Clock: clock})
	ca.Start(t)
	c, err := New(Config{Address: ca.Addr(), TrustDomain: td, Bundle: ca.Bundle(), DataDir: t.TempDir(), Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	c.cfg.Policy.Rand = func() float64 { return 0 } // renew exactly at half-life
	t.Cleanup(func() { _ = c.Close() })
	if err := c.Bootstrap(t.Context(), ca.JoinToken(t, "node-1")); err != nil {
		t.Fatal(err)
	}
	first := c.AgentSVID()
	leaf := first.Certificates[0]
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	start := clock.Now()
	if leaf.NotBefore.After(start) {
		start = leaf.NotBefore
	}
	planned := start.Add(leaf.NotAfter.Sub(start) / 2)
	// ... and never before the CA accepts it: half the lifetime from
	// NotBefore, plus a second.
	planned = later(planned, leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore)/2+time.Second))
	if !clock.WaitFor(ctx, func(p []time.Time) bool { return len(p) == 1 && p[0].Equal(planned) }) {
		t.Fatalf("renewal not planned at half-life %v", planned)
	}
	clock.Set(planned)
	for c.AgentSVID() == first { // bounded by ctx
		if ctx.Err() != nil {
			t.Fatal("agent SVID not renewed")
		}
		clock.WaitFor(ctx, func(p []time.Time) bool { return c.AgentSVID() != first || len(p) > 0 })
	}
	if c.AgentSVID().Certificates[0].SerialNumber.Cmp(leaf.SerialNumber) == 0 {
		t.Fatal("renewed SVID has the old serial")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
