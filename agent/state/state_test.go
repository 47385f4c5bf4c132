package state

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

func sel(typ, value string) Selector { return Selector{Type: typ, Value: value} }

// ident returns an identity for spiffe://example.org<path> with the given
// selectors. The state package reads only the SVID's ID.
func ident(path, entryID string, sels ...Selector) Identity {
	return Identity{
		EntryID:   entryID,
		Selectors: sels,
		SVID:      &x509svid.SVID{ID: spiffeid.RequireFromPath(td, path)},
	}
}

func TestSelectorString(t *testing.T) {
	for _, tc := range []struct {
		s    Selector
		want string
	}{
		{sel("unix", "uid:1000"), "unix:uid:1000"},
		{sel("k8s", "ns:default"), "k8s:ns:default"},
		{sel("unix", "sha256:ab:cd"), "unix:sha256:ab:cd"},
		{Selector{}, ":"},
	} {
		if got := tc.s.String(); got != tc.want {
			t.Errorf("%#v.String() = %q, want %q", tc.s, got, tc.want)
		}
	}
}

func TestIdentityMatches(t *testing.T) {
	uid := sel("unix", "uid:1000")
	gid := sel("unix", "gid:1000")
	ns := sel("k8s", "ns:default")
	for _, tc := range []struct {
		name   string
		id     Identity
		caller []Selector
		want   bool
	}{
		{"all of one", ident("/a", "e", uid), []Selector{uid}, true},
		{"all of two, caller has more", ident("/a", "e", uid, gid), []Selector{ns, gid, uid}, true},
		{"one of two missing", ident("/a", "e", uid, gid), []Selector{uid}, false},
		{"no selectors matches nobody", ident("/a", "e"), []Selector{uid, gid, ns}, false},
		{"no selectors, no caller selectors", ident("/a", "e"), nil, false},
		{"caller with no selectors", ident("/a", "e", uid), nil, false},
		{"same value, other type", ident("/a", "e", sel("k8s", "uid:1000")), []Selector{uid}, false},
		{"same type, other value", ident("/a", "e", sel("unix", "uid:1001")), []Selector{uid}, false},
		{"values are case sensitive", ident("/a", "e", sel("unix", "path:/usr/bin/App")), []Selector{sel("unix", "path:/usr/bin/app")}, false},
		{"types are case sensitive", ident("/a", "e", sel("Unix", "uid:1000")), []Selector{uid}, false},
		{"no prefix matching", ident("/a", "e", sel("unix", "uid:100")), []Selector{uid}, false},
		{"duplicate selector on the identity", ident("/a", "e", uid, uid), []Selector{uid}, true},
		{"empty selector must be presented", ident("/a", "e", Selector{}), []Selector{uid}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.id.Matches(tc.caller); got != tc.want {
				t.Errorf("Matches(%v) = %v, want %v (identity selectors %v)", tc.caller, got, tc.want, tc.id.Selectors)
			}
		})
	}
}

func TestSnapshotForKeepsSnapshotOrder(t *testing.T) {
	uid, gid := sel("unix", "uid:1000"), sel("unix", "gid:1000")
	s := NewStore()
	snap := s.Publish([]Identity{
		ident("/c", "e3", uid),
		ident("/a", "e1", uid, gid),
		ident("/b", "e2", gid),
		ident("/a", "e0", sel("unix", "uid:0")),
		ident("/d", "e4"),
	}, nil)
	entryIDs := func(ids []Identity) []string {
		var out []string
		for _, id := range ids {
			out = append(out, id.EntryID)
		}
		return out
	}
	for _, tc := range []struct {
		caller []Selector
		want   []string
	}{
		{[]Selector{uid}, []string{"e3"}},
		{[]Selector{uid, gid}, []string{"e1", "e2", "e3"}},
		{[]Selector{gid}, []string{"e2"}},
		{[]Selector{sel("k8s", "ns:default")}, nil},
		{nil, nil},
	} {
		if got := entryIDs(snap.For(tc.caller)); !slices.Equal(got, tc.want) {
			t.Errorf("For(%v) = %v, want %v", tc.caller, got, tc.want)
		}
	}
}

func TestNewStoreIsEmptyAtRevisionZero(t *testing.T) {
	s := NewStore()
	cur := s.Current()
	if cur == nil || cur.Revision != 0 || len(cur.Identities) != 0 || cur.Bundle != nil {
		t.Fatalf("new store snapshot = %+v, want empty at revision 0 with no bundle", cur)
	}
	if got := cur.For([]Selector{sel("unix", "uid:0")}); got != nil {
		t.Fatalf("empty snapshot serves %v", got)
	}
}

// TestPublishSortsAndNumbers checks the snapshot order (SPIFFE ID, then
// entry ID), that revisions increase by exactly one, that Publish returns
// what Current then returns, and that the bundle is carried.
func TestPublishSortsAndNumbers(t *testing.T) {
	s := NewStore()
	b := x509bundle.New(td)
	snap := s.Publish([]Identity{
		ident("/z", "1"),
		ident("/a/b", "2"),
		ident("/a", "9"),
		ident("/a", "10"), // string order: "10" < "9"
		ident("/a-b", "3"),
	}, b)
	var got []string
	for _, id := range snap.Identities {
		got = append(got, id.SVID.ID.Path()+"#"+id.EntryID)
	}
	want := []string{"/a#10", "/a#9", "/a-b#3", "/a/b#2", "/z#1"}
	if !slices.Equal(got, want) {
		t.Fatalf("order %v, want %v", got, want)
	}
	if snap.Revision != 1 || snap.Bundle != b || s.Current() != snap {
		t.Fatalf("first publish: revision %d, bundle kept %v, Current is it %v", snap.Revision, snap.Bundle == b, s.Current() == snap)
	}
	for want := uint64(2); want <= 5; want++ {
		if got := s.Publish(nil, nil); got.Revision != want || s.Current() != got {
			t.Fatalf("publish %d: revision %d", want, got.Revision)
		}
	}
	if s.Current().Bundle != nil {
		t.Fatal("a publish without a bundle kept the old one")
	}
}

// TestPublishedSnapshotsNeverChange keeps a snapshot, publishes several
// more, and checks the kept one is exactly as it was.
func TestPublishedSnapshotsNeverChange(t *testing.T) {
	s := NewStore()
	b1 := x509bundle.New(td)
	old := s.Publish([]Identity{ident("/a", "1", sel("unix", "uid:1")), ident("/b", "2")}, b1)
	for i := range 3 {
		s.Publish([]Identity{ident(fmt.Sprintf("/x%d", i), "x")}, x509bundle.New(td))
	}
	if old.Revision != 1 || old.Bundle != b1 || len(old.Identities) != 2 ||
		old.Identities[0].EntryID != "1" || old.Identities[1].EntryID != "2" ||
		!slices.Equal(old.Identities[0].Selectors, []Selector{sel("unix", "uid:1")}) {
		t.Fatalf("kept snapshot changed: %+v", old)
	}
	if s.Current().Revision != 4 {
		t.Fatalf("current revision %d, want 4", s.Current().Revision)
	}
}

// recvWithin waits up to d for a wake-up on ch.
func recvWithin(ch <-chan struct{}, d time.Duration) bool {
	select {
	case <-ch:
		return true
	case <-time.After(d):
		return false
	}
}

// pending reports whether a wake-up is waiting on ch, without waiting: a
// Publish sends before it returns, so no wait is needed.
func pending(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func TestWatchWakesOnPublishAndCoalesces(t *testing.T) {
	s := NewStore()
	ch, stop := s.Watch()
	defer stop()
	if pending(ch) {
		t.Fatal("a new watch has a wake-up before any publish")
	}
	s.Publish(nil, nil)
	if !pending(ch) {
		t.Fatal("no wake-up after Publish")
	}
	if pending(ch) {
		t.Fatal("two wake-ups for one Publish")
	}
	for range 5 {
		s.Publish(nil, nil)
	}
	if !pending(ch) {
		t.Fatal("no wake-up after five publishes")
	}
	if pending(ch) {
		t.Fatal("wake-ups did not coalesce")
	}
	if got := s.Current().Revision; got != 6 {
		t.Fatalf("after a coalesced wake-up Current is at revision %d, want 6", got)
	}
}

func TestWatchStopEndsWakeUps(t *testing.T) {
	s := NewStore()
	stopped, stop := s.Watch()
	live, stopLive := s.Watch()
	defer stopLive()
	stop()
	stop() // stopping twice is harmless
	s.Publish(nil, nil)
	if pending(stopped) {
		t.Fatal("a stopped watch was woken")
	}
	if !pending(live) {
		t.Fatal("stopping one watch stopped another")
	}
}

// TestPublishNeverBlocksOnAWatcher publishes many times to watchers that
// never read: Publish must not wait for them.
func TestPublishNeverBlocksOnAWatcher(t *testing.T) {
	s := NewStore()
	for range 10 {
		_, stop := s.Watch()
		defer stop()
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 1000 {
			s.Publish(nil, nil)
		}
	}()
	if !recvWithin(done, 10*time.Second) {
		t.Fatal("Publish blocked on watchers that do not read")
	}
	if got := s.Current().Revision; got != 1000 {
		t.Fatalf("revision %d, want 1000", got)
	}
}

// publishRevision publishes a snapshot whose every part names the
// revision it will get (rev): identities with entry IDs "rev/i" and a
// bundle for trust domain "revN.test". A reader can then check that no
// snapshot mixes the parts of two publishes.
func publishRevision(s *Store, rev uint64) {
	var ids []Identity
	for i := range int(rev%4) + 1 {
		ids = append(ids, ident(fmt.Sprintf("/w%d", i), fmt.Sprintf("%d/%d", rev, i), sel("unix", "uid:1")))
	}
	s.Publish(ids, x509bundle.New(spiffeid.RequireTrustDomainFromString(fmt.Sprintf("rev%d.test", rev))))
}

// checkConsistent fails unless every part of snap belongs to its revision.
func checkConsistent(snap *Snapshot) error {
	if snap.Revision == 0 {
		if len(snap.Identities) != 0 || snap.Bundle != nil {
			return fmt.Errorf("revision 0 is not empty: %+v", snap)
		}
		return nil
	}
	if want := fmt.Sprintf("rev%d.test", snap.Revision); snap.Bundle == nil || snap.Bundle.TrustDomain().Name() != want {
		return fmt.Errorf("revision %d carries bundle %v", snap.Revision, snap.Bundle)
	}
	if n := int(snap.Revision%4) + 1; len(snap.Identities) != n {
		return fmt.Errorf("revision %d has %d identities, want %d", snap.Revision, len(snap.Identities), n)
	}
	for i, id := range snap.Identities {
		if want := fmt.Sprintf("%d/%d", snap.Revision, i); id.EntryID != want {
			return fmt.Errorf("revision %d identity %d is %q, want %q", snap.Revision, i, id.EntryID, want)
		}
	}
	return nil
}

// TestConcurrentReadersSeeConsistentSnapshots runs one writer against
// polling readers and watchers (run with -race). Every snapshot a reader
// gets is whole (no part of another publish), revisions never go back,
// and every watcher reaches the last revision by waking and reading
// Current, however many wake-ups coalesced.
func TestConcurrentReadersSeeConsistentSnapshots(t *testing.T) {
	const publishes, readers, watchers = 500, 2, 3
	s := NewStore()
	errs := make(chan error, readers+watchers)
	var wg sync.WaitGroup
	writerDone := make(chan struct{})
	for range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- pollUntilDone(s, writerDone)
		}()
	}
	for range watchers {
		ch, stop := s.Watch() // before the writer starts: no publish is missed
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer stop()
			errs <- watchUntil(s, ch, publishes, 30*time.Second)
		}()
	}
	for rev := uint64(1); rev <= publishes; rev++ {
		publishRevision(s, rev)
	}
	close(writerDone)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}

// pollUntilDone reads Current until done is closed, checking each snapshot.
func pollUntilDone(s *Store, done <-chan struct{}) error {
	var last uint64
	for {
		snap := s.Current()
		if err := checkConsistent(snap); err != nil {
			return err
		}
		if snap.Revision < last {
			return fmt.Errorf("revision went back from %d to %d", last, snap.Revision)
		}
		last = snap.Revision
		select {
		case <-done:
			return nil
		default:
		}
	}
}

// watchUntil waits on ch and reads Current after each wake-up until it
// sees revision final, or fails after d.
func watchUntil(s *Store, ch <-chan struct{}, final uint64, d time.Duration) error {
	deadline := time.After(d)
	var last uint64
	for last < final {
		select {
		case <-ch:
		case <-deadline:
			return fmt.Errorf("watcher stuck at revision %d of %d", last, final)
		}
		snap := s.Current()
		if err := checkConsistent(snap); err != nil {
			return err
		}
		if snap.Revision < last { // equal is allowed: a wake-up may be for a revision already read
			return fmt.Errorf("revision went back from %d to %d", last, snap.Revision)
		}
		last = snap.Revision
	}
	return nil
}
