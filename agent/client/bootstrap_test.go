package client

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/agent/client/catest"
	"github.com/castellan-dev/castellan/internal/clock/clocktest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// While the CA answers Unavailable, bootstrap retries after 1s, then 2s
// (on the client's clock), and succeeds once the CA serves again.
func TestBootstrapRetriesWhileTheCAIsUnavailable(t *testing.T) {
	ca := catest.New(t, td)
	r := ca.Serve(t)
	r.Inject(catest.MethodAttest, 2, catest.Fault{Err: status.Error(codes.Unavailable, "catest: datastore unreachable")})
	clock := clocktest.NewClock(time.Now())
	c, err := New(Config{Address: r.Addr(), TrustDomain: td, Bundle: ca.Bundle(), DataDir: t.TempDir(), Clock: clock, FailoverTimeout: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	token := ca.JoinToken(t, "node-1")
	done := make(chan error, 1)
	go func() {
		done <- c.BootstrapRetrying(ctx, func(ctx context.Context) error { return c.Bootstrap(ctx, token) })
	}()
	start := clock.Now()
	for _, at := range []time.Time{start.Add(time.Second), start.Add(3 * time.Second)} {
		if !clock.WaitFor(ctx, func(p []time.Time) bool { return len(p) == 1 && p[0].Equal(at) }) {
			t.Fatalf("no retry planned at +%v", at.Sub(start))
		}
		clock.Set(at)
	}
	if err := <-done; err != nil {
		t.Fatalf("bootstrap after the CA came back: %v", err)
	}
	if n := r.Calls(); n != 3 {
		t.Fatalf("%d attestation calls, want 3 (two refused, one served)", n)
	}
	if c.AgentSVID() == nil {
		t.Fatal("no agent SVID after bootstrap")
	}
}

// A join token the CA refuses is not retried: one call, and an error
// wrapping ErrTokenRefused that says how to get a new one.
func TestRefusedJoinTokenIsNotRetried(t *testing.T) {
	ca := catest.New(t, td)
	r := ca.Serve(t)
	token := ca.JoinToken(t, "node-1")
	first, err := New(Config{Address: r.Addr(), TrustDomain: td, Bundle: ca.Bundle(), DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	if err := first.Bootstrap(t.Context(), token); err != nil {
		t.Fatal(err)
	}
	c, err := New(Config{Address: r.Addr(), TrustDomain: td, Bundle: ca.Bundle(), DataDir: t.TempDir(), FailoverTimeout: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	before := r.Calls()
	err = c.BootstrapRetrying(t.Context(), func(ctx context.Context) error { return c.Bootstrap(ctx, token) })
	if !errors.Is(err, ErrTokenRefused) || !strings.Contains(err.Error(), "castellanctl token create") {
		t.Fatalf("reused token: %v, want ErrTokenRefused saying how to make a new one", err)
	}
	if n := r.Calls() - before; n != 1 {
		t.Fatalf("%d attestation calls for a refused token, want 1", n)
	}
}
