package rotation_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/ca/authority"
	"github.com/castellan-dev/castellan/ca/authority/journal"
	"github.com/castellan-dev/castellan/ca/authority/leaf"
)

func tick(t *testing.T, a *authority.Authority) {
	t.Helper()
	if err := a.Tick(ctx); err != nil {
		t.Fatalf("Tick: %v", err)
	}
}

func wantStates(t *testing.T, a *authority.Authority, want ...journal.State) {
	t.Helper()
	if got := statesOf(t, a); !slices.Equal(got, want) {
		t.Fatalf("states %v, want %v", got, want)
	}
}

func TestTickPreparesAtHalfLifeActivatesAndRetires(t *testing.T) {
	e := newJournalEnv(t)
	a := e.open()
	first := infoOf(t, a, a.Snapshot().ActiveID)
	e.transitions()
	tick(t, a)
	wantStates(t, a, journal.StateActive)

	c := first.Chain[0]
	half := c.NotBefore.Add(c.NotAfter.Sub(c.NotBefore) / 2)
	e.clock.Advance(half.Sub(e.clock.Now()) - time.Second)
	tick(t, a)
	wantStates(t, a, journal.StateActive)

	e.clock.Advance(time.Second)
	tick(t, a)
	wantStates(t, a, journal.StateActive, journal.StatePrepared)
	tr := e.transitions()
	if len(tr) != 1 || !strings.Contains(tr[0].Reason, "rotation") || !tr[0].Authority.Roots[0].Equal(first.Roots[0]) {
		t.Fatalf("prepare transitions %+v: want a new intermediate under the same root", tr)
	}

	tick(t, a)
	wantStates(t, a, journal.StateOld, journal.StateActive)
	if a.Snapshot().ActiveID != tr[0].Authority.ID {
		t.Fatal("the prepared authority does not sign")
	}

	end := infoOf(t, a, first.ID).LeavesExpireBy
	e.clock.Advance(end.Sub(e.clock.Now()) - time.Second)
	tick(t, a)
	wantStates(t, a, journal.StateOld, journal.StateActive)
	e.clock.Advance(time.Second)
	tick(t, a)
	wantStates(t, a, journal.StateRevoked, journal.StateActive)
	if tr := e.transitions(); len(tr) != 3 || !strings.HasPrefix(tr[2].Reason, "retired") {
		t.Fatalf("transitions %+v", tr)
	}
	if len(a.Snapshot().Roots) != 1 {
		t.Fatal("retiring an intermediate under the shared root removed the root")
	}
}

// TestTickWalksThroughARootRotation runs the clock through a root's whole
// life an hour at a time: a new root is prepared when the old one has less
// than an intermediate lifetime left, activated only after the publish
// delay, and at every step exactly one authority signs, under a root of
// the bundle.
func TestTickWalksThroughARootRotation(t *testing.T) {
	e := newJournalEnv(t)
	a := e.open()
	firstRoot := a.Root()
	var newRootPreparedAt time.Time
	seen := map[string]time.Time{} // when each prepared authority was first seen
	for range int(2 * jRootTTL / time.Hour) {
		e.clock.Advance(time.Hour)
		tick(t, a)
		now := e.clock.Now()
		infos, err := a.Authorities(ctx)
		if err != nil {
			t.Fatal(err)
		}
		active := 0
		for _, in := range infos {
			if _, ok := seen[in.ID]; !ok && in.State == journal.StatePrepared {
				seen[in.ID] = now
			}
			switch {
			case in.State == journal.StateActive:
				active++
			case in.State == journal.StatePrepared && !in.Roots[0].Equal(a.Root()) && newRootPreparedAt.IsZero():
				newRootPreparedAt = now
				if left := a.Root().NotAfter.Sub(now); left >= jInterTTL {
					t.Fatalf("a new root was prepared with %s left on the old one", left)
				}
			case in.State == journal.StatePrepared && !now.Before(later(seen[in.ID], in.ActivatableAt).Add(time.Hour)):
				t.Fatalf("authority %s still prepared an hour after it became activatable", in.ID)
			}
		}
		if active != 1 {
			t.Fatalf("at %v, %d authorities are active", now, active)
		}
		if !a.Root().Equal(firstRoot) && now.Before(newRootPreparedAt.Add(jDelay)) {
			t.Fatalf("the new root signs %s after it was prepared, before the publish delay %s", now.Sub(newRootPreparedAt), jDelay)
		}
		signLeaf(t, a)
	}
	if a.Root().Equal(firstRoot) {
		t.Fatal("the root was never rotated")
	}
	for _, r := range a.Snapshot().Roots {
		if r.Equal(firstRoot) {
			t.Fatal("the expired first root is still in the bundle")
		}
	}
}

func TestTwoReplicasTickingTogetherRotateOnce(t *testing.T) {
	e := newJournalEnv(t)
	a1, a2 := e.open(), e.open()
	c := a1.Intermediate()
	e.clock.Advance(c.NotAfter.Sub(e.clock.Now()) / 2)
	e.transitions()
	for range 3 {
		var wg sync.WaitGroup
		for _, a := range []*authority.Authority{a1, a2} {
			wg.Go(func() {
				if err := a.Tick(context.Background()); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
	}
	wantStates(t, a1, journal.StateOld, journal.StateActive)
	prepared, activated := 0, 0
	for _, tr := range e.transitions() {
		if tr.To == journal.StatePrepared {
			prepared++
		}
		if tr.To == journal.StateActive {
			activated++
		}
	}
	if prepared != 1 || activated != 1 {
		t.Fatalf("two replicas made %d preparations and %d activations, want 1 and 1", prepared, activated)
	}
	if a1.Snapshot().ActiveID != a2.Snapshot().ActiveID {
		t.Fatal("the replicas sign with different authorities")
	}
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func TestRunRotatesOnTicksAndStopsWithTheContext(t *testing.T) {
	e := newJournalEnv(t)
	a := e.open()
	first := a.Snapshot().ActiveID
	ticks := make(chan time.Time)
	rctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(rctx, ticks) }()
	c := a.Intermediate()
	e.clock.Advance(c.NotAfter.Sub(e.clock.Now()) / 2)
	ticks <- e.clock.Now() // prepares
	ticks <- e.clock.Now() // activates
	waitFor(t, a, "the scheduled rotation", func(s authority.Snapshot) bool { return s.ActiveID != first })
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
}

// TestIdleTicksDoNotWriteTheStore: a Tick with nothing due writes nothing,
// so replicas ticking every few seconds do not wake each other through the
// shared store's change signal.
func TestIdleTicksDoNotWriteTheStore(t *testing.T) {
	e := newJournalEnv(t)
	files := newCacerts(t, e)
	r1 := files.root(e.clock.Now())
	files.write(files.intermediate(e.clock.Now(), r1), r1)
	plugin := e.open()
	e2 := newJournalEnv(t)
	managed := e2.open()
	changed, changed2 := e.db.Changed(), e2.db.Changed()
	for range 5 {
		e.clock.Advance(time.Minute)
		e2.clock.Advance(time.Minute)
		tick(t, plugin)
		tick(t, managed)
	}
	select {
	case <-changed:
		t.Fatal("idle ticks of a plug-in CA wrote the store")
	case <-changed2:
		t.Fatal("idle ticks of a managed CA wrote the store")
	default:
	}
}

func TestAFailingStepDoesNotHoldBackTheOthers(t *testing.T) {
	e := newJournalEnv(t)
	a, oldID, activeID := rotated(t, e)
	editRecords(t, e.db, func(recs []*journal.Record) {
		for _, r := range recs {
			if r.ID == activeID {
				r.SealedRootKey[30] ^= 1 // the next intermediate cannot be signed
			}
		}
	})
	c := a.Intermediate()
	e.clock.Advance(c.NotAfter.Sub(e.clock.Now()) / 2) // prepare due, old leaves expired
	err := a.Tick(ctx)
	if err == nil || !strings.Contains(err.Error(), "root key of authority "+activeID) {
		t.Fatalf("Tick with an unopenable root key: %v", err)
	}
	if got := infoOf(t, a, oldID).State; got != journal.StateRevoked {
		t.Fatalf("the old authority is %s: a failed prepare held back its retirement", got)
	}
	if a.Snapshot().ActiveID != activeID {
		t.Fatal("the signer changed")
	}
}

// TestTicksRecoverAnIntermediateThatExpiredDuringDowntime: a CA down past
// its intermediate's expiry signs again after two ticks (prepare under the
// long-published root, then activate), and the expired one is retired at
// the next.
func TestTicksRecoverAnIntermediateThatExpiredDuringDowntime(t *testing.T) {
	e := newJournalEnv(t)
	first := e.open().Snapshot().ActiveID
	e.clock.Advance(jInterTTL + time.Hour)
	a := e.open() // restarted after the downtime
	if _, err := signOnce(a); !errors.Is(err, leaf.ErrSignerExpired) {
		t.Fatalf("signing with the expired intermediate: %v", err)
	}
	tick(t, a)
	tick(t, a)
	if a.Snapshot().ActiveID == first {
		t.Fatal("still signing with the expired intermediate after two ticks")
	}
	signLeaf(t, a)
	tick(t, a)
	if got := infoOf(t, a, first).State; got != journal.StateRevoked {
		t.Fatalf("the expired intermediate is %s, want retired at the next tick", got)
	}
}
