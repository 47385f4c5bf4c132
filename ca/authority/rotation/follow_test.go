package rotation_test

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/ca/authority"
	"github.com/castellan-dev/castellan/ca/authority/journal"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// waitFor waits, on a's change signal, until cond holds (at most 10 s).
func waitFor(t *testing.T, a *authority.Authority, what string, cond func(authority.Snapshot) bool) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		changed := a.Changed()
		if cond(a.Snapshot()) {
			return
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("timed out waiting for %s; snapshot %+v", what, a.Snapshot())
		}
	}
}

// TestAReplicaFollowsTransitionsMadeByAnother runs two Authority values on
// one shared store handle: the second only learns of the first one's
// transitions through the store's change signal.
func TestAReplicaFollowsTransitionsMadeByAnother(t *testing.T) {
	e := newJournalEnv(t)
	leader := e.open()
	e.cfg.Journal = sharedDB{e.db}
	follower := e.open()
	first := leader.Snapshot()

	fctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- follower.Follow(fctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()

	in, err := leader.Prepare(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, follower, "the prepared root", func(s authority.Snapshot) bool { return len(s.Roots) == 2 })
	if follower.Snapshot().ActiveID != first.ActiveID {
		t.Fatal("the follower switched signer on a prepare")
	}
	e.clock.Advance(jDelay)
	if _, err := leader.Activate(ctx, in.ID, false); err != nil {
		t.Fatal(err)
	}
	waitFor(t, follower, "the activation", func(s authority.Snapshot) bool { return s.ActiveID == in.ID })
	if iss := signLeaf(t, follower); !iss.Chain[1].Equal(in.Chain[0]) {
		t.Fatal("the follower signs with the old authority")
	}
	if _, err := leader.Taint(ctx, first.ActiveID); err != nil {
		t.Fatal(err)
	}
	if _, err := leader.Revoke(ctx, first.ActiveID, true); err != nil {
		t.Fatal(err)
	}
	waitFor(t, follower, "the revocation", func(s authority.Snapshot) bool { return len(s.Roots) == 1 && s.Roots[0].Equal(in.Roots[0]) })
}

// TestSigningDuringRotationsAlwaysChainsToTheBundle signs continuously
// while authorities are prepared, activated, tainted and retired: no
// signing fails, and every leaf still valid when a snapshot is taken after
// it was signed chains to a root of that snapshot.
func TestSigningDuringRotationsAlwaysChainsToTheBundle(t *testing.T) {
	e := newJournalEnv(t)
	a := e.open()
	var signed, checked atomic.Int64
	var failMu sync.Mutex
	var failures []error
	fail := func(err error) {
		failMu.Lock()
		failures = append(failures, err)
		failMu.Unlock()
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				iss, err := signOnce(a)
				if err != nil {
					fail(err)
					return
				}
				snap, now := a.Snapshot(), e.clock.Now()
				signed.Add(1)
				if !now.Before(iss.NotAfter) {
					continue // expired: no peer will see it
				}
				checked.Add(1)
				if err := chainsToSnapshot(iss, snap); err != nil {
					fail(err)
				}
			}
		})
	}
	// progress waits until some leaves were signed since the last step.
	progress := func() {
		target := signed.Load() + 20
		for deadline := time.Now().Add(10 * time.Second); signed.Load() < target; {
			if time.Now().After(deadline) {
				t.Fatal("signing made no progress")
			}
			time.Sleep(time.Millisecond)
		}
	}
	for i := range 4 {
		prev := a.Snapshot().ActiveID
		in, err := a.Prepare(ctx, i%2 == 0)
		if err != nil {
			t.Fatal(err)
		}
		progress()
		e.clock.Advance(jDelay)
		if _, err := a.Activate(ctx, in.ID, false); err != nil {
			t.Fatal(err)
		}
		progress()
		if _, err := a.Taint(ctx, prev); err != nil {
			t.Fatal(err)
		}
		progress()
		e.clock.Advance(jMaxTTL + 5*time.Minute)
		tick(t, a)
		progress()
		if got := infoOf(t, a, prev).State; got != journal.StateRevoked {
			t.Fatalf("cycle %d: the tainted authority is %s after its leaves expired, want retired", i, got)
		}
	}
	close(stop)
	wg.Wait()
	if len(failures) > 0 {
		t.Fatalf("%d failures, first: %v", len(failures), failures[0])
	}
	if checked.Load() < 100 {
		t.Fatalf("only %d of %d leaves were checked", checked.Load(), signed.Load())
	}
}

func TestMetricsFollowTheJournal(t *testing.T) {
	e := newJournalEnv(t)
	reg := prometheus.NewRegistry()
	e.cfg.Registry = reg
	a := e.open()
	first := a.Snapshot().ActiveID
	state := func(id, s string) float64 {
		return metricValue(t, reg, "castellan_ca_authority_state", "authority", id, "state", s)
	}
	if v := state(first, "active"); v != 1 {
		t.Fatalf("state{active} of the first authority = %v", v)
	}
	if v := metricValue(t, reg, "castellan_ca_active_authority_not_after_seconds"); v != float64(a.Intermediate().NotAfter.Unix()) {
		t.Fatalf("active not-after %v, want %v", v, a.Intermediate().NotAfter.Unix())
	}
	in, _ := a.Prepare(ctx, true)
	_, err := a.Activate(ctx, in.ID, false)
	refusals := metricValue(t, reg, "castellan_ca_authority_refusals_total", "reason", "root_not_published")
	if !errors.Is(err, journal.ErrRefused) || refusals != 1 {
		t.Fatalf("refused activation: %v, refusals %v", err, refusals)
	}
	e.clock.Advance(jDelay)
	if _, err := a.Activate(ctx, in.ID, false); err != nil {
		t.Fatal(err)
	}
	if v := metricValue(t, reg, "castellan_ca_authority_rotations_total"); v != 1 {
		t.Fatalf("rotations %v, want 1 (bootstrap is not a rotation)", v)
	}
	for id, want := range map[string]string{first: "old", in.ID: "active"} {
		for _, s := range allStates() {
			v, w := state(id, string(s)), 0.0
			if string(s) == want {
				w = 1
			}
			if v != w {
				t.Errorf("state{%s,%s} = %v, want %v", id, s, v, w)
			}
		}
	}
	if v := metricValue(t, reg, "castellan_ca_authority_leaves_expire_by_seconds", "authority", first); v != float64(infoOf(t, a, first).LeavesExpireBy.Unix()) {
		t.Errorf("leaves-expire-by of the old authority = %v", v)
	}
	if n, err := testutil.GatherAndCount(reg, "castellan_ca_authority_state", "castellan_ca_authority_not_after_seconds"); err != nil || n != 2*len(allStates())+2 {
		t.Errorf("gathered %d series (%v), want %d", n, err, 2*len(allStates())+2)
	}
}

// TestTwoReplicasRacingOperatorsKeepOneActiveAuthority runs operators on
// two replicas of one shared store, each preparing, activating, tainting
// and revoking as fast as it can (force where allowed), with Tick and
// Follow running: every transition is refused or made whole, exactly one
// authority is active after each, and both replicas end on the same
// signer and bundle.
func TestTwoReplicasRacingOperatorsKeepOneActiveAuthority(t *testing.T) {
	e := newJournalEnv(t)
	e.open() // creates the KEK file the shared replicas need
	e.cfg.Journal = sharedDB{e.db}
	replicas := []*authority.Authority{e.open(), e.open()}
	fctx, cancel := context.WithCancel(context.Background())
	var followers sync.WaitGroup
	for _, r := range replicas {
		followers.Go(func() { _ = r.Follow(fctx) })
	}
	var wg sync.WaitGroup
	for i, r := range replicas {
		wg.Go(func() {
			for n := range 40 {
				operate(t, r, (n+i)%4)
				if err := r.Tick(ctx); err != nil {
					t.Errorf("Tick: %v", err)
				}
				if err := oneActive(r); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	cancel()
	followers.Wait()
	for _, r := range replicas {
		tick(t, r)
	}
	s0, s1 := replicas[0].Snapshot(), replicas[1].Snapshot()
	if s0.ActiveID != s1.ActiveID || !slices.EqualFunc(s0.Roots, s1.Roots, (*x509.Certificate).Equal) {
		t.Fatalf("replicas disagree: %s (%d roots) and %s (%d roots)", s0.ActiveID, len(s0.Roots), s1.ActiveID, len(s1.Roots))
	}
	signLeaf(t, replicas[0])
	signLeaf(t, replicas[1])
}

// operate makes one operator step on r; refusals are expected.
func operate(t *testing.T, r *authority.Authority, op int) {
	infos, err := r.Authorities(ctx)
	if err != nil {
		t.Error(err)
		return
	}
	var err2 error
	switch op {
	case 0:
		_, err2 = r.Prepare(ctx, len(infos)%2 == 0)
	case 1:
		for _, in := range infos {
			if in.State == journal.StatePrepared {
				_, err2 = r.Activate(ctx, in.ID, true)
			}
		}
	case 2:
		for _, in := range infos {
			if in.State == journal.StateOld {
				_, err2 = r.Taint(ctx, in.ID)
			}
		}
	case 3:
		for _, in := range infos {
			if in.State == journal.StateTainted || in.State == journal.StatePrepared {
				_, err2 = r.Revoke(ctx, in.ID, true)
			}
		}
	}
	if err2 != nil && !errors.Is(err2, journal.ErrRefused) {
		t.Errorf("operation %d: %v", op, err2)
	}
}

// oneActive checks the journal has exactly one active authority and that
// r's signer is a trusted one whose root is in its bundle.
func oneActive(r *authority.Authority) error {
	infos, err := r.Authorities(ctx)
	if err != nil {
		return err
	}
	active := 0
	for _, in := range infos {
		if in.State == journal.StateActive {
			active++
		}
	}
	if active != 1 {
		return fmt.Errorf("%d active authorities", active)
	}
	s := r.Snapshot()
	if !slices.ContainsFunc(s.Roots, s.Root.Equal) {
		return fmt.Errorf("the signer's root is not in its own bundle")
	}
	return nil
}
