package rotation_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/ca/authority"
	"github.com/castellan-dev/castellan/ca/authority/journal"
	"github.com/castellan-dev/castellan/ca/authority/leaf"
	"github.com/castellan-dev/castellan/internal/clock/clocktest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

var ctx = context.Background()

// wantRefused fails t unless err is a refusal with code and a message
// containing every one of words.
func wantRefused(t *testing.T, err error, code codes.Code, words ...string) {
	t.Helper()
	if !errors.Is(err, journal.ErrRefused) {
		t.Fatalf("got %v, want a refusal", err)
	}
	if got := status.Code(err); got != code {
		t.Errorf("gRPC code %v, want %v (%v)", got, code, err)
	}
	for _, w := range words {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("refusal %q does not say %q", err, w)
		}
	}
}

func TestJournalBootstrapsOneActiveAuthorityAndReopensIt(t *testing.T) {
	e := newJournalEnv(t)
	a := e.open()
	s := a.Snapshot()
	if s.ActiveID == "" || len(s.Roots) != 1 || !s.Roots[0].Equal(s.Root) || s.Generation == 0 {
		t.Fatalf("snapshot after bootstrap: %+v", s)
	}
	tr := e.transitions()
	if len(tr) != 1 || tr[0].From != "" || tr[0].To != journal.StateActive || tr[0].Authority.ID != s.ActiveID ||
		!strings.HasPrefix(tr[0].Reason, "bootstrap") {
		t.Fatalf("bootstrap transitions %+v", tr)
	}
	signLeaf(t, a)

	again := e.open()
	if got := again.Snapshot(); got.ActiveID != s.ActiveID || !got.Root.Equal(s.Root) {
		t.Fatalf("reopen gave authority %s, want %s", got.ActiveID, s.ActiveID)
	}
	if got := statesOf(t, again); !slices.Equal(got, []journal.State{journal.StateActive}) {
		t.Fatalf("states after reopen %v: a second start must not add an authority", got)
	}
	if tr := e.transitions(); len(tr) != 0 {
		t.Errorf("reopen reported transitions %+v", tr)
	}
}

func TestJournalImportsTheCAFilesOfTheDataDir(t *testing.T) {
	e := newJournalEnv(t)
	legacy, err := authority.New(authority.Config{TrustDomain: testTD, DataDir: e.cfg.DataDir, Clock: clocktest.Func(e.clock.Now),
		MaxTTL: jMaxTTL, RootTTL: jRootTTL, IntermediateTTL: jInterTTL})
	if err != nil {
		t.Fatal(err)
	}
	a := e.open()
	if !a.Root().Equal(legacy.Root()) || !a.Intermediate().Equal(legacy.Intermediate()) {
		t.Fatal("the journal did not import the CA of the data dir: existing workloads would lose trust")
	}
	if tr := e.transitions(); len(tr) != 1 || !strings.Contains(tr[0].Reason, "imported") {
		t.Fatalf("transitions %+v", tr)
	}
}

func TestPrepareUnderTheSameRootActivatesAtOnce(t *testing.T) {
	e := newJournalEnv(t)
	a := e.open()
	first := a.Snapshot()
	e.transitions()
	e.clock.Advance(jDelay) // the root has been published for the delay

	in, err := a.Prepare(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if in.State != journal.StatePrepared || !in.Roots[0].Equal(first.Root) || in.ID == first.ActiveID {
		t.Fatalf("prepared %+v", in)
	}
	if s := a.Snapshot(); s.ActiveID != first.ActiveID || len(s.Roots) != 1 {
		t.Fatalf("prepare changed the signer or the bundle: %+v", s)
	}
	if in.ActivatableAt.After(e.clock.Now()) {
		t.Fatalf("an intermediate under the published root is activatable at %v, want now", in.ActivatableAt)
	}
	changed := a.Changed()
	act, err := a.Activate(ctx, in.ID, false)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	default:
		t.Fatal("Changed did not fire on activation")
	}
	if act.State != journal.StateActive || a.Snapshot().ActiveID != in.ID || !a.Intermediate().Equal(in.Chain[0]) {
		t.Fatalf("after Activate: %+v, signing %s", act, a.Snapshot().ActiveID)
	}
	old := infoOf(t, a, first.ActiveID)
	if old.State != journal.StateOld || !old.DeactivatedAt.Equal(e.clock.Now()) {
		t.Fatalf("previous authority %+v, want old since now", old)
	}
	tr := e.transitions()
	if len(tr) != 3 || tr[0].To != journal.StatePrepared || tr[1].From != journal.StateActive || tr[1].To != journal.StateOld || tr[2].To != journal.StateActive {
		t.Fatalf("transitions %+v", tr)
	}
	if iss := signLeaf(t, a); !iss.Chain[1].Equal(in.Chain[0]) {
		t.Fatal("leaf not signed by the activated authority")
	}
}

func TestActivateIsRefusedUntilTheNewRootHasBeenPublishedForTheDelay(t *testing.T) {
	e := newJournalEnv(t)
	a := e.open()
	first := a.Snapshot()
	in, err := a.Prepare(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	if in.Roots[0].Equal(first.Root) {
		t.Fatal("Prepare(newRoot) reused the root")
	}
	if s := a.Snapshot(); len(s.Roots) != 2 || s.ActiveID != first.ActiveID {
		t.Fatalf("the prepared root must be published at once, signer unchanged: %+v", s)
	}
	if want := e.clock.Now().Add(jDelay); !in.ActivatableAt.Equal(want) {
		t.Fatalf("ActivatableAt %v, want %v", in.ActivatableAt, want)
	}
	_, err = a.Activate(ctx, in.ID, false)
	wantRefused(t, err, codes.FailedPrecondition, in.ID, "publish delay", "force")
	e.clock.Advance(jDelay - time.Second)
	_, err = a.Activate(ctx, in.ID, false)
	wantRefused(t, err, codes.FailedPrecondition, "publish delay")
	if a.Snapshot().ActiveID != first.ActiveID {
		t.Fatal("a refused activation changed the signer")
	}
	e.clock.Advance(time.Second)
	if _, err := a.Activate(ctx, in.ID, false); err != nil {
		t.Fatalf("after the delay: %v", err)
	}
	if s := a.Snapshot(); s.ActiveID != in.ID || !s.Root.Equal(in.Roots[0]) || len(s.Roots) != 2 {
		t.Fatalf("after activation %+v: the old root must stay until its leaves expire", s)
	}
}

func TestActivateForcedBeforeTheDelay(t *testing.T) {
	e := newJournalEnv(t)
	a := e.open()
	in, err := a.Prepare(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Activate(ctx, in.ID, true); err != nil {
		t.Fatal(err)
	}
	if a.Snapshot().ActiveID != in.ID {
		t.Fatal("forced activation did not switch the signer")
	}
}

func TestActivateRefusals(t *testing.T) {
	e := newJournalEnv(t)
	a := e.open()
	first := a.Snapshot().ActiveID
	_, err := a.Activate(ctx, "0123456789abcdef", false)
	wantRefused(t, err, codes.NotFound, "0123456789abcdef", "authority list")
	if !errors.Is(err, journal.ErrNotFound) {
		t.Error("unknown ID is not ErrNotFound")
	}
	_, err = a.Activate(ctx, first, false)
	wantRefused(t, err, codes.FailedPrecondition, "is active", "only a prepared authority")

	in, _ := a.Prepare(ctx, false)
	e.clock.Advance(jDelay)
	if _, err := a.Activate(ctx, in.ID, false); err != nil {
		t.Fatal(err)
	}
	_, err = a.Activate(ctx, first, true)
	wantRefused(t, err, codes.FailedPrecondition, "is old")

	next, _ := a.Prepare(ctx, false)
	e.clock.Advance(jInterTTL + time.Hour) // past its NotAfter
	_, err = a.Activate(ctx, next.ID, true)
	wantRefused(t, err, codes.FailedPrecondition, "not valid now")
}

func TestPrepareIsRefusedWhileAnotherIsPrepared(t *testing.T) {
	e := newJournalEnv(t)
	a := e.open()
	in, err := a.Prepare(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	_, err = a.Prepare(ctx, true)
	wantRefused(t, err, codes.FailedPrecondition, in.ID, "already prepared")
	if got := statesOf(t, a); !slices.Equal(got, []journal.State{journal.StateActive, journal.StatePrepared}) {
		t.Fatalf("states %v", got)
	}
}

// rotated returns a CA whose first authority is old under a second, active
// one with a new root published past the delay; it returns their IDs.
func rotated(t *testing.T, e *journalEnv) (a *authority.Authority, oldID, activeID string) {
	t.Helper()
	a = e.open()
	oldID = a.Snapshot().ActiveID
	in, err := a.Prepare(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(jDelay)
	if _, err := a.Activate(ctx, in.ID, false); err != nil {
		t.Fatal(err)
	}
	e.transitions()
	return a, oldID, in.ID
}

func TestTaintMarksAnOldAuthorityAndKeepsItTrusted(t *testing.T) {
	e := newJournalEnv(t)
	a, oldID, _ := rotated(t, e)
	changed := a.Changed()
	in, err := a.Taint(ctx, oldID)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	default:
		t.Fatal("Changed did not fire on a taint: agents must learn which leaves to replace")
	}
	if s := a.Snapshot(); len(s.Tainted) != 1 || !s.Tainted[0].Equal(in.Chain[0]) {
		t.Fatalf("snapshot lists %d tainted certificates, want the old intermediate", len(s.Tainted))
	}
	if in.State != journal.StateTainted || !in.TaintedAt.Equal(e.clock.Now()) {
		t.Fatalf("after Taint %+v", in)
	}
	if len(a.Snapshot().Roots) != 2 {
		t.Fatal("a tainted authority's root must stay in the bundle until its leaves are replaced")
	}
	if tr := e.transitions(); len(tr) != 1 || tr[0].From != journal.StateOld || tr[0].To != journal.StateTainted {
		t.Fatalf("transitions %+v", tr)
	}
}

func TestTaintRefusals(t *testing.T) {
	e := newJournalEnv(t)
	a, oldID, activeID := rotated(t, e)
	_, err := a.Taint(ctx, activeID)
	wantRefused(t, err, codes.FailedPrecondition, "is active", "activate another")
	prep, _ := a.Prepare(ctx, false)
	_, err = a.Taint(ctx, prep.ID)
	wantRefused(t, err, codes.FailedPrecondition, "never signed", "revoke it")
	if _, err := a.Taint(ctx, oldID); err != nil {
		t.Fatal(err)
	}
	_, err = a.Taint(ctx, oldID)
	wantRefused(t, err, codes.FailedPrecondition, "already tainted")
	if _, err := a.Revoke(ctx, oldID, true); err != nil {
		t.Fatal(err)
	}
	_, err = a.Taint(ctx, oldID)
	wantRefused(t, err, codes.FailedPrecondition, "already revoked")
	_, err = a.Taint(ctx, "nope")
	wantRefused(t, err, codes.NotFound)
}

func TestRevokeRemovesTheRootOnceTheLeavesHaveExpired(t *testing.T) {
	e := newJournalEnv(t)
	a, oldID, _ := rotated(t, e)
	old := infoOf(t, a, oldID)
	wantEnd := old.DeactivatedAt.Add(jMaxTTL + leaf.Backdate + time.Minute) // the follow margin of the package comment
	if !old.LeavesExpireBy.Equal(wantEnd) {
		t.Fatalf("LeavesExpireBy %v, want %v", old.LeavesExpireBy, wantEnd)
	}
	_, err := a.Revoke(ctx, oldID, false)
	wantRefused(t, err, codes.FailedPrecondition, oldID, wantEnd.UTC().Format(time.RFC3339), "taint", "force")
	if len(a.Snapshot().Roots) != 2 {
		t.Fatal("a refused revocation changed the bundle")
	}
	e.clock.Advance(wantEnd.Sub(e.clock.Now()))
	in, err := a.Revoke(ctx, oldID, false)
	if err != nil {
		t.Fatal(err)
	}
	if in.State != journal.StateRevoked {
		t.Fatalf("after Revoke %+v", in)
	}
	s := a.Snapshot()
	if len(s.Roots) != 1 || s.Roots[0].Equal(old.Roots[0]) {
		t.Fatal("the revoked authority's root is still in the bundle")
	}
}

func TestRevokeForcedCutsOffUnexpiredLeaves(t *testing.T) {
	e := newJournalEnv(t)
	a, oldID, _ := rotated(t, e)
	if _, err := a.Revoke(ctx, oldID, true); err != nil {
		t.Fatal(err)
	}
	if len(a.Snapshot().Roots) != 1 {
		t.Fatal("forced revocation left the root in the bundle")
	}
}

func TestRevokeAPreparedAuthorityThatNeverSigned(t *testing.T) {
	e := newJournalEnv(t)
	a := e.open()
	in, err := a.Prepare(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	if !infoOf(t, a, in.ID).LeavesExpireBy.IsZero() {
		t.Fatal("a prepared authority cannot have leaves")
	}
	if _, err := a.Revoke(ctx, in.ID, false); err != nil {
		t.Fatalf("revoking a never-active authority needs no force: %v", err)
	}
	if len(a.Snapshot().Roots) != 1 {
		t.Fatal("the revoked prepared root is still published")
	}
	if _, err := a.Prepare(ctx, false); err != nil {
		t.Fatalf("the slot must be free after revoking the prepared authority: %v", err)
	}
}

func TestRevokeRefusals(t *testing.T) {
	e := newJournalEnv(t)
	a, oldID, activeID := rotated(t, e)
	_, err := a.Revoke(ctx, activeID, true)
	wantRefused(t, err, codes.FailedPrecondition, "is active")
	if _, err := a.Revoke(ctx, oldID, true); err != nil {
		t.Fatal(err)
	}
	_, err = a.Revoke(ctx, oldID, true)
	wantRefused(t, err, codes.FailedPrecondition, "already revoked")
	_, err = a.Revoke(ctx, "nope", true)
	wantRefused(t, err, codes.NotFound)
}

func TestAFailingHookAbortsTheTransition(t *testing.T) {
	e := newJournalEnv(t)
	a := e.open()
	first := a.Snapshot()
	in, err := a.Prepare(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	e.hookFail = errors.New("ledger unavailable")
	_, err = a.Activate(ctx, in.ID, true)
	if err == nil || !strings.Contains(err.Error(), "ledger unavailable") || !strings.Contains(err.Error(), "not made") {
		t.Fatalf("Activate with a failing hook: %v", err)
	}
	if a.Snapshot().ActiveID != first.ActiveID {
		t.Fatal("the signer changed although the transition was not recorded")
	}
	if got := statesOf(t, a); !slices.Equal(got, []journal.State{journal.StateActive, journal.StatePrepared}) {
		t.Fatalf("journal states %v after an aborted transition", got)
	}
	if reopened := e.open(); reopened.Snapshot().ActiveID != first.ActiveID {
		t.Fatal("the aborted transition reached the store")
	}
}

func TestAPublishDelayLongerThanTheRotationLeadIsRefused(t *testing.T) {
	e := newJournalEnv(t)
	e.cfg.PublishDelay = jInterTTL / 2
	_, err := authority.Open(ctx, e.cfg)
	if err == nil || !strings.Contains(err.Error(), "publish delay") {
		t.Fatalf("Open with a publish delay of half the intermediate TTL: %v", err)
	}
	e.cfg.PublishDelay = 0 // default: max TTL + 5 minutes
	if _, err := authority.Open(ctx, e.cfg); err != nil {
		t.Fatal(err)
	}
}

func TestTransitionsWithoutJournalAreRefused(t *testing.T) {
	a := newTestAuthority(t)
	_, err := a.Prepare(ctx, false)
	wantRefused(t, err, codes.FailedPrecondition, "no authority journal")
	if infos, err := a.Authorities(ctx); err != nil || infos != nil {
		t.Fatalf("Authorities without journal: %v, %v", infos, err)
	}
	if err := a.Tick(ctx); err != nil {
		t.Fatal(err)
	}
}
