package manager

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/agent/cache"
	"github.com/castellan-dev/castellan/agent/client"
	"github.com/castellan-dev/castellan/agent/client/catest"
	"github.com/castellan-dev/castellan/agent/logcheck"
	"github.com/castellan-dev/castellan/agent/rotate"
	"github.com/castellan-dev/castellan/agent/state"
	"github.com/prometheus/client_golang/prometheus"
)

// fakeLogCheck proves (or refuses) what it is told to and records calls.
type fakeLogCheck struct {
	mu        sync.Mutex
	refuse    error
	proved    chan []logcheck.Cert
	monitored chan []any
}

func newFakeLogCheck() *fakeLogCheck {
	return &fakeLogCheck{proved: make(chan []logcheck.Cert, 16), monitored: make(chan []any, 16)}
}

func (f *fakeLogCheck) setRefuse(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.refuse = err
}

func (f *fakeLogCheck) Prove(_ context.Context, certs []logcheck.Cert) []error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.proved <- certs
	errs := make([]error, len(certs))
	for i := range errs {
		errs[i] = f.refuse
	}
	return errs
}

func (f *fakeLogCheck) Monitor(_ context.Context, certs []logcheck.Cert, describe func(int) []any) {
	for i := range certs {
		f.monitored <- describe(i)
	}
}

// startWithLog is env.start with a log policy.
func (e *env) startWithLog(token string, mode logcheck.Mode, chk LogChecker) {
	t := e.t
	t.Helper()
	cl, err := client.New(client.Config{Address: e.ca.Addr(), TrustDomain: td, Bundle: e.ca.Bundle(), DataDir: e.dir, Clock: e.clock, FailoverTimeout: -1})
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.Bootstrap(t.Context(), token); err != nil {
		t.Fatal(err)
	}
	if e.cache, err = cache.Open(filepath.Join(e.dir, "cache.db"), cache.Config{Clock: e.clock}); err != nil {
		t.Fatal(err)
	}
	e.store, e.reg = state.NewStore(), prometheus.NewRegistry()
	e.mgr, err = New(Config{CA: cl, Cache: e.cache, Store: e.store, TrustDomain: td, Clock: e.clock,
		Policy: rotate.Policy{Rand: func() float64 { return 0 }}, OnBundle: cl.SetBundle, Registry: e.reg,
		LogPolicy: mode, LogCheck: chk})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- e.mgr.Run(ctx) }()
	e.stop = func() { cancel(); <-done; _ = cl.Close(); _ = e.cache.Close() }
	t.Cleanup(func() {
		if e.stop != nil {
			e.stop()
		}
	})
}

func waitCall[T any](t *testing.T, ch chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		var zero T
		return zero
	}
}

// Under enforce an SVID the log check refuses is neither cached nor
// served; the identity retries, and the SVID proven next is served.
func TestEnforceHoldsBackUnprovenSVID(t *testing.T) {
	ca := catest.New(t, td)
	ca.Start(t)
	e1 := ca.AddEntry(t, entry("ratings", time.Hour)).Id
	e := newEnv(t, ca, t.TempDir())
	chk := newFakeLogCheck()
	chk.setRefuse(fmt.Errorf("%w: test", logcheck.ErrNotWitnessed))
	e.startWithLog(ca.JoinToken(t, "node-1"), logcheck.Enforce, chk)
	certs := waitCall(t, chk.proved, "the first proof")
	if len(certs) != 1 || len(certs[0].DER) == 0 {
		t.Fatalf("proved %d certificates, want the one issued", len(certs))
	}
	chk.setRefuse(nil)
	// The refusal scheduled a retry (1s base, equal jitter, rand 0);
	// nothing was served or cached meanwhile.
	retry := e.clock.Now().Add(500 * time.Millisecond)
	e.waitTimer(retry)
	if s := find(e.store.Current(), e1); s != nil {
		t.Fatal("an unproven SVID was served")
	}
	if _, ok, _ := e.cache.Get(e1); ok {
		t.Fatal("an unproven SVID was cached")
	}
	e.clock.Set(retry)
	waitCall(t, chk.proved, "the retried proof")
	snap := e.waitSnapshot("e1 served once proven", serving(e1))
	if got := find(snap, e1).Certificates[0].Raw; string(got) == string(certs[0].DER) {
		t.Fatal("the refused certificate was served after all")
	}
}

// Under monitor the SVID is served at once and handed to Monitor with
// what names it in an alarm.
func TestMonitorServesAndChecksInBackground(t *testing.T) {
	ca := catest.New(t, td)
	ca.Start(t)
	e1 := ca.AddEntry(t, entry("ratings", time.Hour)).Id
	e := newEnv(t, ca, t.TempDir())
	chk := newFakeLogCheck()
	chk.setRefuse(errors.New("never asked under monitor"))
	e.startWithLog(ca.JoinToken(t, "node-1"), logcheck.Monitor, chk)
	e.waitSnapshot("e1 served", serving(e1))
	desc := waitCall(t, chk.monitored, "Monitor")
	if fmt.Sprint(desc[:2]) != "[entry_id "+e1+"]" {
		t.Fatalf("alarm fields %v do not name the entry", desc)
	}
	select {
	case <-chk.proved:
		t.Fatal("monitor held the SVID back for a synchronous proof")
	default:
	}
}

func TestLogPolicyNeedsAChecker(t *testing.T) {
	cl, err := client.New(client.Config{Address: "127.0.0.1:1", TrustDomain: td, DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	_, err = New(Config{CA: cl, Cache: &cache.Cache{}, Store: state.NewStore(), TrustDomain: td, LogPolicy: logcheck.Enforce})
	if err == nil {
		t.Fatal("enforce without a checker was accepted")
	}
}
