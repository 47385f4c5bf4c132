package manager

import (
	"crypto/x509"
	"log/slog"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/agent/client/catest"
	"github.com/castellan-dev/castellan/agent/rotate"
	"github.com/castellan-dev/castellan/agent/state"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// issuedBy reports whether svid's chain carries inter as its intermediate.
func issuedBy(svid *x509svid.SVID, inter *x509.Certificate) bool {
	return svid != nil && len(svid.Certificates) > 1 && svid.Certificates[1].Equal(inter)
}

func TestTaintReplacesOnlySVIDsUnderTheTaintedAuthority(t *testing.T) {
	ca := catest.New(t, td)
	ca.Start(t)
	a := ca.AddEntry(t, entry("a", time.Hour)).Id
	b := ca.AddEntry(t, entry("b", time.Hour)).Id
	e := newEnv(t, ca, t.TempDir())
	e.start(ca.JoinToken(t, "node-1"))
	e.waitSnapshot("a and b", func(s *state.Snapshot) bool { return len(s.Identities) == 2 })

	old := ca.RotateIntermediate(t)
	cID := ca.AddEntry(t, entry("c", time.Hour)).Id
	snap := e.waitSnapshot("c", serving(cID))
	c := find(snap, cID)
	if issuedBy(c, old) || !issuedBy(find(snap, a), old) {
		t.Fatal("the CA did not rotate its intermediate")
	}
	if _, signed := ca.Counts(); signed != 3 {
		t.Fatalf("%d SVIDs signed before the taint, want 3", signed)
	}

	// No time passes: without the taint nothing is due for half an hour.
	ca.Taint(t, old)
	snap = e.waitSnapshot("a and b replaced", func(s *state.Snapshot) bool {
		sa, sb := find(s, a), find(s, b)
		return sa != nil && sb != nil && !issuedBy(sa, old) && !issuedBy(sb, old)
	})
	if got := find(snap, cID); got.Certificates[0].SerialNumber.Cmp(c.Certificates[0].SerialNumber) != 0 {
		t.Fatal("an SVID under the active authority was replaced by the taint")
	}
	// A later push (any change) repeats the taint: nothing more is renewed.
	e.waitSnapshot("d", serving(ca.AddEntry(t, entry("d", time.Hour)).Id))
	if _, signed := ca.Counts(); signed != 6 {
		t.Fatalf("%d SVIDs signed, want 6 (3, then a and b replaced once, then d)", signed)
	}
}

func TestTaintBringsRenewalIntoTheWindow(t *testing.T) {
	ca := catest.New(t, td)
	now := time.Now().Truncate(time.Second)
	id := spiffeid.RequireFromPath(td, "/w")
	svid := ca.Issue(t, id, time.Hour)
	other := catest.New(t, td).Issue(t, id, time.Hour)
	m := &Manager{cfg: Config{Clock: fixedClock{now}, Policy: rotate.Policy{TaintWindow: 10 * time.Second, Rand: func() float64 { return 0.5 }}},
		log: slog.New(slog.DiscardHandler), ids: map[string]*identity{}}
	planned := now.Add(30 * time.Minute)
	m.ids["under"] = &identity{}
	m.ids["under"].rec.SVID, m.ids["under"].rec.NextRotation = svid, planned
	m.ids["other"] = &identity{}
	m.ids["other"].rec.SVID, m.ids["other"].rec.NextRotation = other, planned
	m.ids["none"] = &identity{}

	m.applyTaints([]*x509.Certificate{svid.Certificates[1]})
	if got := m.ids["under"].rec.NextRotation; !got.Equal(now.Add(5 * time.Second)) {
		t.Fatalf("tainted SVID renews at +%v, want +5s (middle of the 10s window)", got.Sub(now))
	}
	if got := m.ids["other"].rec.NextRotation; !got.Equal(planned) {
		t.Fatalf("SVID of another CA moved to +%v", got.Sub(now))
	}
	// The same taint again, later: the time already drawn stays.
	m.cfg.Clock = fixedClock{now.Add(2 * time.Second)}
	m.applyTaints([]*x509.Certificate{svid.Certificates[1]})
	if got := m.ids["under"].rec.NextRotation; !got.Equal(now.Add(5 * time.Second)) {
		t.Fatalf("repeated taint moved the renewal to +%v", got.Sub(now))
	}
}

func TestChainUnderRecognisesAChainWithoutItsIntermediate(t *testing.T) {
	ca := catest.New(t, td)
	id := spiffeid.RequireFromPath(td, "/w")
	svid := ca.Issue(t, id, time.Hour)
	inter := svid.Certificates[1]
	if !chainUnder(svid.Certificates[:1], []*x509.Certificate{inter}) {
		t.Fatal("a leaf signed by the tainted intermediate, sent without it, was not recognised")
	}
	other := catest.New(t, td).Issue(t, id, time.Hour)
	if chainUnder(svid.Certificates, other.Certificates[1:]) {
		t.Fatal("a chain counted as under another CA's intermediate (same subject name, other key)")
	}
}

type fixedClock struct{ t time.Time }

func (c fixedClock) Now() time.Time                       { return c.t }
func (c fixedClock) After(time.Duration) <-chan time.Time { return nil }
