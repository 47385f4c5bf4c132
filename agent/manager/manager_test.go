package manager

import (
	"context"
	"crypto/x509"
	"log/slog"
	"math/big"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/agent/cache"
	"github.com/castellan-dev/castellan/agent/client"
	"github.com/castellan-dev/castellan/agent/client/catest"
	"github.com/castellan-dev/castellan/agent/rotate"
	"github.com/castellan-dev/castellan/agent/state"
	cav1 "github.com/castellan-dev/castellan/api/castellan/ca/v1"
	"github.com/castellan-dev/castellan/internal/clock/clocktest"
	"github.com/castellan-dev/castellan/internal/serial"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

var td = spiffeid.RequireTrustDomainFromString("cluster.local")

// env is one agent (client, cache, manager, store) against a fake CA.
type env struct {
	t     *testing.T
	ca    *catest.CA
	clock *clocktest.Clock
	cache *cache.Cache
	store *state.Store
	reg   *prometheus.Registry
	mgr   *Manager
	dir   string
	stop  func()
	log   *slog.Logger // nil: discard
	// signTimeout bounds one signing call (0: the manager's default).
	signTimeout time.Duration
	// maxBatch is the policy's MaxBatch (0: the default).
	maxBatch int
}

func newEnv(t *testing.T, ca *catest.CA, dir string) *env {
	t.Helper()
	clock := clocktest.NewClock(time.Now().Truncate(time.Second)) // X.509 times are whole seconds
	return &env{t: t, ca: ca, clock: clock, dir: dir}
}

// start bootstraps the client (the CA must be up unless the data dir
// already holds an agent SVID) and runs a manager.
func (e *env) start(token string) {
	t := e.t
	t.Helper()
	// FailoverTimeout -1: one attempt per call, so that the manager's own
	// backoff is what these tests see.
	cl, err := client.New(client.Config{Address: e.ca.Addr(), TrustDomain: td, Bundle: e.ca.Bundle(), DataDir: e.dir, Clock: e.clock, FailoverTimeout: -1})
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.Bootstrap(t.Context(), token); err != nil {
		t.Fatal(err)
	}
	e.cache, err = cache.Open(filepath.Join(e.dir, "cache.db"), cache.Config{Clock: e.clock})
	if err != nil {
		t.Fatal(err)
	}
	e.store = state.NewStore()
	e.reg = prometheus.NewRegistry()
	e.mgr, err = New(Config{
		CA: cl, Cache: e.cache, Store: e.store, TrustDomain: td, Clock: e.clock,
		Policy:   rotate.Policy{Rand: func() float64 { return 0 }, MaxBatch: e.maxBatch},
		OnBundle: cl.SetBundle, Registry: e.reg, Logger: e.log, SignTimeout: e.signTimeout,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- e.mgr.Run(ctx) }()
	e.stop = func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		_ = cl.Close()
		_ = e.cache.Close()
	}
	t.Cleanup(func() {
		if e.stop != nil {
			e.stop()
		}
	})
}

func (e *env) shutdown() { e.stop(); e.stop = nil }

// waitSnapshot waits (up to 10s) for a published snapshot satisfying cond.
func (e *env) waitSnapshot(what string, cond func(*state.Snapshot) bool) *state.Snapshot {
	e.t.Helper()
	ch, stop := e.store.Watch()
	defer stop()
	timeout := time.After(10 * time.Second)
	for {
		if s := e.store.Current(); cond(s) {
			return s
		}
		select {
		case <-ch:
		case <-timeout:
			e.t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// waitTimer waits until the manager has armed a timer at exactly at.
func (e *env) waitTimer(at time.Time) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(e.t.Context(), 10*time.Second)
	defer cancel()
	ok := e.clock.WaitFor(ctx, func(p []time.Time) bool {
		for _, x := range p {
			if x.Equal(at) {
				return true
			}
		}
		return false
	})
	if !ok {
		e.t.Fatalf("no timer armed at %v", at)
	}
}

// entry is an entry of node-1 for service account sa; the CA chooses its
// ID.
func entry(sa string, ttl time.Duration) *cav1.Entry {
	return &cav1.Entry{
		SpiffeId: "spiffe://cluster.local/ns/default/sa/" + sa, Node: "node-1",
		Selectors: []*cav1.Selector{{Type: "unix", Value: "uid:1000"}}, TtlSeconds: int64(ttl / time.Second),
	}
}

func serving(entryID string) func(*state.Snapshot) bool {
	return func(s *state.Snapshot) bool { return find(s, entryID) != nil }
}

func find(s *state.Snapshot, entryID string) *x509svid.SVID {
	for _, id := range s.Identities {
		if id.EntryID == entryID {
			return id.SVID
		}
	}
	return nil
}

func TestNewEntryIsIssuedCachedAndPublished(t *testing.T) {
	ca := catest.New(t, td)
	ca.Start(t)
	e1 := ca.AddEntry(t, entry("ratings", time.Minute)).Id
	e := newEnv(t, ca, t.TempDir())
	e.start(ca.JoinToken(t, "node-1"))
	snap := e.waitSnapshot("e1 served", serving(e1))
	svid := find(snap, e1)
	if svid.ID.String() != "spiffe://cluster.local/ns/default/sa/ratings" {
		t.Fatalf("served %s", svid.ID)
	}
	if _, _, err := x509svid.Verify(svid.Certificates, snap.Bundle); err != nil {
		t.Fatalf("served SVID does not verify against the served bundle: %v", err)
	}
	rec, ok, err := e.cache.Get(e1)
	if err != nil || !ok || !rec.SVID.Certificates[0].Equal(svid.Certificates[0]) {
		t.Fatal("published SVID is not the cached one")
	}
	if got := testutil.ToFloat64(e.mgr.metrics.cached); got != 1 {
		t.Fatalf("cached identities metric = %v, want 1", got)
	}
	if err := e.mgr.Ready(); err != nil {
		t.Fatalf("Ready: %v", err)
	}
}

// TestDueIdentitiesSplitIntoBatchesOfThePolicySize: seven identities due
// at once with a MaxBatch of 3 are asked for in three calls (3, 3, 1).
func TestDueIdentitiesSplitIntoBatchesOfThePolicySize(t *testing.T) {
	ca := catest.New(t, td)
	ca.Start(t)
	for _, sa := range []string{"a", "b", "c", "d", "e", "f", "g"} {
		ca.AddEntry(t, entry(sa, time.Minute))
	}
	e := newEnv(t, ca, t.TempDir())
	e.maxBatch = 3
	e.start(ca.JoinToken(t, "node-1"))
	e.waitSnapshot("seven identities", func(s *state.Snapshot) bool { return len(s.Identities) == 7 })
	if batches, signed := ca.Counts(); batches != 3 || signed != 7 {
		t.Fatalf("%d SVIDs in %d batches, want 7 in 3 batches of at most 3", signed, batches)
	}
}

func TestRenewalAtPlannedTimeInOneBatch(t *testing.T) {
	ca := catest.New(t, td)
	ca.Start(t)
	var ids []string
	for _, sa := range []string{"a", "b", "c"} {
		ids = append(ids, ca.AddEntry(t, entry(sa, 20*time.Second)).Id)
	}
	e := newEnv(t, ca, t.TempDir())
	e.start(ca.JoinToken(t, "node-1"))
	snap := e.waitSnapshot("three identities", func(s *state.Snapshot) bool { return len(s.Identities) == 3 })
	batches, signed := ca.Counts()
	if batches != 1 || signed != 3 {
		t.Fatalf("first issuance took %d batches for %d SVIDs, want 1 batch of 3", batches, signed)
	}
	old := find(snap, ids[0])
	planned := halfLife(e.clock.Now(), old) // no jitter
	e.waitTimer(planned)
	e.clock.Set(planned.Add(-time.Millisecond))
	if b, _ := ca.Counts(); b != 1 {
		t.Fatal("renewed before the planned time")
	}
	e.clock.Set(planned)
	e.waitSnapshot("renewed", func(s *state.Snapshot) bool {
		n := find(s, ids[0])
		return n != nil && n.Certificates[0].SerialNumber.Cmp(old.Certificates[0].SerialNumber) != 0
	})
	e.waitSnapshot("all renewed", func(s *state.Snapshot) bool {
		_, signed := ca.Counts()
		return signed == 6
	})
	if batches, signed := ca.Counts(); batches != 2 || signed != 6 {
		t.Fatalf("renewal took %d batches (total) for %d SVIDs, want 2 batches of 3", batches, signed)
	}
}

func TestBackdatedSVIDIsNotRenewedOnArrival(t *testing.T) {
	ca := catest.New(t, td) // backdates by 30s: longer than the lifetime
	ca.Start(t)
	e1 := ca.AddEntry(t, entry("ratings", 20*time.Second)).Id
	e := newEnv(t, ca, t.TempDir())
	start := e.clock.Now()
	e.start(ca.JoinToken(t, "node-1"))
	e.waitSnapshot("e1", serving(e1))
	svid := find(e.store.Current(), e1)
	if !svid.Certificates[0].NotBefore.Before(start.Add(-20 * time.Second)) {
		t.Fatalf("SVID not backdated past its lifetime: NotBefore %v, received %v", svid.Certificates[0].NotBefore, start)
	}
	e.waitTimer(halfLife(start, svid)) // half of the 20s left at receipt
	if b, s := ca.Counts(); b != 1 || s != 1 {
		t.Fatalf("%d batches / %d SVIDs before any time passed, want 1/1", b, s)
	}
}

func TestBackoffWhileCAFailsKeepsServingCurrentSVID(t *testing.T) {
	ca := catest.New(t, td)
	ca.Start(t)
	e1 := ca.AddEntry(t, entry("details", 100*time.Second)).Id
	e := newEnv(t, ca, t.TempDir())
	e.start(ca.JoinToken(t, "node-1"))
	old := find(e.waitSnapshot("e1", serving(e1)), e1)
	ca.FailSigning(status.Error(codes.Unavailable, "CA is overloaded"))
	planned := halfLife(e.clock.Now(), old)
	e.waitTimer(planned)
	e.clock.Set(planned)
	// First retry: base 1s with equal jitter (rand 0) = 500ms later.
	e.waitTimer(planned.Add(500 * time.Millisecond))
	if got := find(e.store.Current(), e1); got != old {
		t.Fatal("current SVID not kept in service while the CA fails")
	}
	e.clock.Set(planned.Add(500 * time.Millisecond))
	e.waitTimer(planned.Add(500*time.Millisecond + time.Second)) // second retry: 2s/2
	if f := testutil.ToFloat64(e.mgr.metrics.rotations.WithLabelValues("failure")); f != 2 {
		t.Fatalf("failure count %v, want 2", f)
	}
	ca.FailSigning(nil)
	e.clock.Set(planned.Add(1500 * time.Millisecond))
	e.waitSnapshot("recovered", func(s *state.Snapshot) bool {
		n := find(s, e1)
		return n != nil && n != old
	})
}

// A CA that takes a signing call and never answers holds the manager for
// SignTimeout only: the call fails, the identity retries with backoff,
// and the retry is served.
func TestSigningCallThatHangsIsBoundedBySignTimeout(t *testing.T) {
	ca := catest.New(t, td)
	ca.Start(t)
	ca.Inject(catest.MethodBatchSign, 1, catest.Fault{Hang: true})
	e1 := ca.AddEntry(t, entry("details", time.Hour)).Id
	e := newEnv(t, ca, t.TempDir())
	e.signTimeout = 200 * time.Millisecond
	start := e.clock.Now()
	e.start(ca.JoinToken(t, "node-1"))
	e.waitTimer(start.Add(500 * time.Millisecond)) // first retry: 1s base, equal jitter (rand 0)
	if f := testutil.ToFloat64(e.mgr.metrics.rotations.WithLabelValues("failure")); f != 1 {
		t.Fatalf("failure count %v after the hung call, want 1", f)
	}
	e.clock.Set(start.Add(500 * time.Millisecond))
	e.waitSnapshot("served after the retry", serving(e1))
	if b, s := ca.Counts(); b != 2 || s != 1 {
		t.Fatalf("%d batches / %d SVIDs, want the hung one and the retry / 1", b, s)
	}
}

func TestServesCacheAtOnceWhenCAIsDown(t *testing.T) {
	ca := catest.New(t, td)
	ca.Start(t)
	e1 := ca.AddEntry(t, entry("reviews", time.Hour)).Id
	dir := t.TempDir()
	e := newEnv(t, ca, dir)
	e.start(ca.JoinToken(t, "node-1"))
	first := find(e.waitSnapshot("e1", serving(e1)), e1)
	e.shutdown()
	ca.Stop()

	e2 := newEnv(t, ca, dir)
	e2.clock.Set(e.clock.Now())
	e2.start("")
	snap := e2.waitSnapshot("cached e1", serving(e1))
	if !find(snap, e1).Certificates[0].Equal(first.Certificates[0]) {
		t.Fatal("restarted agent does not serve the cached SVID")
	}
	if snap.Bundle == nil || e2.mgr.Ready() != nil {
		t.Fatal("restarted agent is not ready from its cache")
	}
	if e2.mgr.CAReachable() {
		t.Fatal("CA reported reachable while stopped")
	}
	// The CA returns: the agent resyncs and renews on schedule.
	ca.Start(t)
	e2.clock.Set(first.Certificates[0].NotBefore.Add(30 * time.Minute))
	renewed := func(s *state.Snapshot) bool {
		n := find(s, e1)
		return n != nil && !n.Certificates[0].Equal(first.Certificates[0])
	}
	// gRPC reconnects on the wall clock; move the fake clock through the
	// manager's retries until it gets through (bounded).
	ch, stop := e2.store.Watch()
	defer stop()
	for i := 0; !renewed(e2.store.Current()); i++ {
		if i == 200 {
			t.Fatal("not renewed after the CA came back")
		}
		e2.clock.Advance(2 * time.Second)
		select {
		case <-ch:
		case <-time.After(50 * time.Millisecond):
		}
	}
	if !e2.mgr.CAReachable() {
		t.Fatal("CA not reachable after recovery")
	}
}

func TestExpiredSVIDIsNeverServed(t *testing.T) {
	ca := catest.New(t, td)
	ca.Start(t)
	e1 := ca.AddEntry(t, entry("ratings", 20*time.Second)).Id
	e := newEnv(t, ca, t.TempDir())
	e.start(ca.JoinToken(t, "node-1"))
	svid := find(e.waitSnapshot("e1", serving(e1)), e1)
	ca.FailSigning(status.Error(codes.Unavailable, "down"))
	e.waitTimer(halfLife(e.clock.Now(), svid)) // the loop is waiting: move time past it
	e.clock.Set(svid.Certificates[0].NotAfter)
	e.waitSnapshot("expired SVID dropped", func(s *state.Snapshot) bool { return find(s, e1) == nil })
	if _, ok, _ := e.cache.Get(e1); ok {
		t.Fatal("expired SVID still in the cache")
	}
}

func TestRevokedSVIDIsReplacedWithoutGap(t *testing.T) {
	ca := catest.New(t, td)
	ca.Start(t)
	e1 := ca.AddEntry(t, entry("productpage", time.Hour)).Id
	e := newEnv(t, ca, t.TempDir())
	e.start(ca.JoinToken(t, "node-1"))
	old := find(e.waitSnapshot("e1", serving(e1)), e1)
	ch, stop := e.store.Watch()
	defer stop()
	ca.Revoke(t, hexSerial(old))
	timeout := time.After(10 * time.Second)
	for {
		s := e.store.Current()
		got := find(s, e1)
		if got == nil {
			t.Fatal("revoked SVID dropped before its replacement was stored")
		}
		if got != old {
			break
		}
		select {
		case <-ch:
		case <-timeout:
			t.Fatal("revoked SVID not replaced")
		}
	}
}

func TestRevokedSVIDWithoutReplacementStopsBeingServed(t *testing.T) {
	ca := catest.New(t, td)
	ca.Start(t)
	e1 := ca.AddEntry(t, entry("productpage", time.Hour)).Id
	e := newEnv(t, ca, t.TempDir())
	e.start(ca.JoinToken(t, "node-1"))
	old := find(e.waitSnapshot("e1", serving(e1)), e1)
	ca.FailSigning(status.Error(codes.PermissionDenied, "node is quarantined"))
	ca.Revoke(t, hexSerial(old))
	e.waitSnapshot("revoked SVID dropped", func(s *state.Snapshot) bool { return find(s, e1) == nil })
}

func TestRemovedEntryIsDropped(t *testing.T) {
	ca := catest.New(t, td)
	ca.Start(t)
	e1 := ca.AddEntry(t, entry("a", time.Hour)).Id
	e2 := ca.AddEntry(t, entry("b", time.Hour)).Id
	e := newEnv(t, ca, t.TempDir())
	e.start(ca.JoinToken(t, "node-1"))
	e.waitSnapshot("both", func(s *state.Snapshot) bool { return len(s.Identities) == 2 })
	ca.DeleteEntry(t, e1)
	e.waitSnapshot("e1 dropped", func(s *state.Snapshot) bool { return len(s.Identities) == 1 && find(s, e2) != nil })
	if _, ok, _ := e.cache.Get(e1); ok {
		t.Fatal("removed entry still cached")
	}
}

// halfLife is when an SVID received at recv is renewed without jitter:
// half of the lifetime left at receipt (the CA backdates NotBefore).
func halfLife(recv time.Time, svid *x509svid.SVID) time.Time {
	return recv.Add(svid.Certificates[0].NotAfter.Sub(recv) / 2)
}

func TestNewRequiresCollaborators(t *testing.T) {
	if _, err := New(Config{}); err == nil {
		t.Fatal("New with no CA, cache or store succeeded")
	}
	var _ CA = (*client.Client)(nil)
}

// hexSerial is the serial in the real CA's form (serial.Number):
// lower-case hex without leading zeros.
func hexSerial(s *x509svid.SVID) string {
	return serial.FromBig(s.Certificates[0].SerialNumber).String()
}

// A revocation made with the serial in another hex form (leading zeros,
// upper case) reaches the agent, and the SVID is replaced.
func TestRevocationInAnyHexFormReplacesTheSVID(t *testing.T) {
	ca := catest.New(t, td)
	ca.Start(t)
	e1 := ca.AddEntry(t, entry("productpage", time.Hour)).Id
	e := newEnv(t, ca, t.TempDir())
	e.start(ca.JoinToken(t, "node-1"))
	old := find(e.waitSnapshot("e1", serving(e1)), e1)
	ca.Revoke(t, "00"+strings.ToUpper(hexSerial(old)))
	e.waitSnapshot("revoked SVID replaced", func(s *state.Snapshot) bool {
		got := find(s, e1)
		return got != nil && got != old
	})
}

// Serials whose first byte is below 0x10 have no leading zero in the CA's
// form; the agent must compare them in that form (about one serial in
// eight was never matched, so its revocation was ignored).
func TestHeldSerialMatchesPushedSerialInAnyForm(t *testing.T) {
	for _, tc := range []struct {
		serial *big.Int
		want   string
	}{
		{big.NewInt(0x02ab), "2ab"},
		{big.NewInt(0x0f), "f"},
		{big.NewInt(0x1234), "1234"},
		{new(big.Int).Lsh(big.NewInt(1), 122), "4" + strings.Repeat("0", 30)},
	} {
		svid := &x509svid.SVID{Certificates: []*x509.Certificate{{SerialNumber: tc.serial}}}
		held := serialOf(cache.Record{SVID: svid})
		if held.String() != tc.want {
			t.Errorf("serialOf(%#x) = %q, want %q", tc.serial, held, tc.want)
		}
		for _, pushed := range []string{tc.want, "0" + tc.want, strings.ToUpper("00" + tc.want)} {
			if got, err := serial.Parse(pushed); err != nil || got != held {
				t.Errorf("pushed %q reads as %q (%v), held %q", pushed, got, err, held)
			}
		}
	}
	if !serialOf(cache.Record{}).IsZero() {
		t.Error("a record without an SVID has a serial")
	}
}

// A signing call the CA answers with Unavailable (not one the manager
// gave up on) marks the CA unreachable until a call gets through, even
// while the sync stream stays up.
func TestSigningUnavailableMarksCAUnreachable(t *testing.T) {
	ca := catest.New(t, td)
	ca.Start(t)
	ca.FailSigning(status.Error(codes.Unavailable, "signer down"))
	e1 := ca.AddEntry(t, entry("details", time.Hour)).Id
	e := newEnv(t, ca, t.TempDir())
	start := e.clock.Now()
	e.start(ca.JoinToken(t, "node-1"))
	e.waitTimer(start.Add(500 * time.Millisecond)) // the retry after the refused call
	if e.mgr.CAReachable() {
		t.Fatal("CA reported reachable after its signing call answered Unavailable")
	}
	ca.FailSigning(nil)
	e.clock.Set(start.Add(500 * time.Millisecond))
	e.waitSnapshot("served after the retry", serving(e1))
	if !e.mgr.CAReachable() {
		t.Fatal("CA not reachable after a signing call got through")
	}
}
