package client

import (
	"context"
	"crypto/x509"
	"slices"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/agent/client/catest"
	"github.com/castellan-dev/castellan/internal/clock/clocktest"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// TestAgentSVIDUnderTaintedAuthorityIsRenewedInTheTaintWindow: a taint of
// another CA's intermediate changes nothing; a taint of the agent SVID's
// own issuer moves its renewal from half-life into the taint window (at the
// point the policy draws), and Run renews it then.
func TestAgentSVIDUnderTaintedAuthorityIsRenewedInTheTaintWindow(t *testing.T) {
	ca := catest.New(t, td, catest.Config{AgentTTL: time.Hour})
	ca.Start(t)
	clock := clocktest.NewClock(time.Now())
	c := newClient(t, ca, t.TempDir(), clock)
	c.cfg.Policy.Rand = func() float64 { return 0.5 }
	c.cfg.Policy.TaintWindow = 10 * time.Second
	if err := c.Bootstrap(t.Context(), ca.JoinToken(t, "node-1")); err != nil {
		t.Fatal(err)
	}
	first := c.AgentSVID()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() { cancel(); <-done }()
	start := clock.Now()
	if !clock.WaitFor(ctx, func(p []time.Time) bool { return len(p) == 1 && p[0].After(start.Add(20*time.Minute)) }) {
		t.Fatal("no renewal planned near half-life")
	}

	// The CA taints the authority that signed the agent SVID: it then
	// accepts its renewal before half-life.
	old := ca.RotateIntermediate(t)
	ca.Taint(t, old)
	if !first.Certificates[1].Equal(old) {
		t.Fatal("the agent SVID was not signed by the intermediate rotated out")
	}
	other := catest.New(t, td).Issue(t, spiffeid.RequireFromPath(td, "/other"), time.Hour).Certificates[1]
	c.Taint([]*x509.Certificate{other})
	if at, ok := c.taint.renewAt(first.Certificates[0]); ok {
		t.Fatalf("a taint of another CA's intermediate planned a renewal at %v", at)
	}

	c.Taint([]*x509.Certificate{other, first.Certificates[1]})
	want := start.Add(5 * time.Second)
	if !clock.WaitFor(ctx, func(p []time.Time) bool { return slices.ContainsFunc(p, want.Equal) }) {
		t.Fatal("taint did not move the renewal to the middle of the 10s window")
	}
	c.Taint([]*x509.Certificate{first.Certificates[1]}) // repeated: the time stays
	if at, _ := c.taint.renewAt(first.Certificates[0]); !at.Equal(want) {
		t.Fatalf("a repeated taint moved the renewal to %v", at)
	}
	clock.Set(want)
	for c.AgentSVID() == first {
		if ctx.Err() != nil {
			t.Fatal("agent SVID under the tainted authority not renewed")
		}
		clock.WaitFor(ctx, func(p []time.Time) bool { return c.AgentSVID() != first || len(p) > 0 })
	}
}
