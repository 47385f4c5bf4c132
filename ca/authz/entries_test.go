package authz

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	cav1 "github.com/castellan-dev/castellan/api/castellan/ca/v1"
	"github.com/castellan-dev/castellan/ca/store"
	"github.com/castellan-dev/castellan/ca/store/boltstore"
	"github.com/castellan-dev/castellan/internal/clock/clocktest"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

var td = spiffeid.RequireTrustDomainFromString("cluster.local")

func openDB(t *testing.T) *boltstore.DB {
	t.Helper()
	db, err := boltstore.Open(filepath.Join(t.TempDir(), "r.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// openEntries loads the entries of db, closed at the end of the test.
func openEntries(t *testing.T, db store.DB) *Entries {
	t.Helper()
	return openEntriesWith(t, db, EntriesConfig{MaxTTL: 24 * time.Hour})
}

// openEntriesWith is openEntries with cfg.
func openEntriesWith(t *testing.T, db store.DB, cfg EntriesConfig) *Entries {
	t.Helper()
	e, err := NewEntries(context.Background(), db, td, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

func newEntries(t *testing.T) *Entries {
	t.Helper()
	return openEntries(t, openDB(t))
}

func entry(id, node string, sels ...string) *cav1.Entry {
	ent := &cav1.Entry{SpiffeId: id, Node: node}
	for _, s := range sels {
		sel, err := ParseSelector(s)
		if err != nil {
			panic(err)
		}
		ent.Selectors = append(ent.Selectors, sel)
	}
	return ent
}

func TestCreateEntryValidates(t *testing.T) {
	e := newEntries(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		ent  *cav1.Entry
		want string
	}{
		{"missing", nil, "missing"},
		{"bad ID", entry("not-an-id", "n", "unix:uid:1"), "is invalid"},
		{"other trust domain", entry("spiffe://evil.example/x", "n", "unix:uid:1"), "not in trust domain"},
		{"no path", entry("spiffe://cluster.local", "n", "unix:uid:1"), "no path"},
		{"reserved path", entry("spiffe://cluster.local/castellan/agent/n", "n", "unix:uid:1"), "reserved"},
		{"bad node", entry("spiffe://cluster.local/a", "Bad Node", "unix:uid:1"), "node name"},
		{"no selectors", entry("spiffe://cluster.local/a", "n"), "no selectors"},
		{"empty selector value", &cav1.Entry{SpiffeId: "spiffe://cluster.local/a", Node: "n", Selectors: []*cav1.Selector{{Type: "unix"}}}, "TYPE:KEY:VALUE"},
		{"TTL too long", &cav1.Entry{SpiffeId: "spiffe://cluster.local/a", Node: "n", TtlSeconds: 90000,
			Selectors: []*cav1.Selector{{Type: "unix", Value: "uid:1"}}}, "out of range"},
		// Seconds that overflow a time.Duration were once multiplied
		// unchecked and could wrap below the maximum.
		{"TTL overflowing a duration", &cav1.Entry{SpiffeId: "spiffe://cluster.local/a", Node: "n", TtlSeconds: 18446744074, // times 1e9 wraps to 0.29s
			Selectors: []*cav1.Selector{{Type: "unix", Value: "uid:1"}}}, "out of range"},
		{"negative TTL", &cav1.Entry{SpiffeId: "spiffe://cluster.local/a", Node: "n", TtlSeconds: -1,
			Selectors: []*cav1.Selector{{Type: "unix", Value: "uid:1"}}}, "out of range"},
	} {
		_, err := e.Create(ctx, tc.ent)
		if !isInvalidEntry(err) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an invalid-entry refusal containing %q", tc.name, err, tc.want)
		}
	}
	if len(e.List("")) != 0 {
		t.Fatal("an invalid entry was stored")
	}
}

func TestEntriesPersistAndReload(t *testing.T) {
	db := openDB(t)
	ctx := context.Background()
	e := openEntries(t, db)
	a, err := e.Create(ctx, entry("spiffe://cluster.local/b", "node-1", "unix:uid:1000", "unix:path:/usr/bin/app", "unix:uid:1000"))
	if err != nil {
		t.Fatal(err)
	}
	if len(a.Selectors) != 2 || a.Id == "" || a.CreatedAt == nil {
		t.Fatalf("stored entry %v: want 2 deduplicated selectors, an ID and a time", a)
	}
	if _, err := e.Create(ctx, entry("spiffe://cluster.local/b", "node-1", "unix:path:/usr/bin/app", "unix:uid:1000")); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Fatalf("duplicate: %v", err)
	}
	b, err := e.Create(ctx, entry("spiffe://cluster.local/a", "node-2", "unix:uid:1"))
	if err != nil {
		t.Fatal(err)
	}
	reloaded := openEntries(t, db)
	all := reloaded.List("")
	if len(all) != 2 || all[0].Id != b.Id || all[1].Id != a.Id {
		t.Fatalf("reloaded %v; want both, sorted by SPIFFE ID", all)
	}
	if got := reloaded.List("node-1"); len(got) != 1 || got[0].Id != a.Id {
		t.Fatalf("List(node-1) = %v", got)
	}
	if err := reloaded.Delete(ctx, a.Id); err != nil {
		t.Fatal(err)
	}
	if err := reloaded.Delete(ctx, a.Id); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
	again := openEntries(t, db)
	if len(again.List("")) != 1 {
		t.Fatal("delete was not persisted")
	}
}

// A new entry is dated by the configured clock, not the wall clock.
func TestEntryCreatedAtIsTheClocksTime(t *testing.T) {
	at := time.Date(2031, 5, 6, 7, 8, 9, 0, time.UTC)
	clk := clocktest.NewClock(at)
	e := openEntriesWith(t, openDB(t), EntriesConfig{Clock: clk})
	a, err := e.Create(context.Background(), entry("spiffe://cluster.local/a", "node-1", "unix:uid:1"))
	if err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Hour)
	b, err := e.Create(context.Background(), entry("spiffe://cluster.local/b", "node-1", "unix:uid:1"))
	if err != nil {
		t.Fatal(err)
	}
	if got := a.CreatedAt.AsTime(); !got.Equal(at) {
		t.Fatalf("first entry created at %v, want the clock's %v", got, at)
	}
	if got := b.CreatedAt.AsTime(); !got.Equal(at.Add(time.Hour)) {
		t.Fatalf("second entry created at %v, want the advanced clock's %v", got, at.Add(time.Hour))
	}
}

func TestChangedFiresOnWrites(t *testing.T) {
	e := newEntries(t)
	ch := e.Changed()
	ent, err := e.Create(context.Background(), entry("spiffe://cluster.local/a", "n", "unix:uid:1"))
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
	default:
		t.Fatal("Changed did not fire on Create")
	}
	ch = e.Changed()
	if err := e.Delete(context.Background(), ent.Id); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
	default:
		t.Fatal("Changed did not fire on Delete")
	}
}

func TestParseSelector(t *testing.T) {
	s, err := ParseSelector("unix:path:/usr/bin/app")
	if err != nil || s.Type != "unix" || s.Value != "path:/usr/bin/app" {
		t.Fatalf("got %v, %v", s, err)
	}
	for _, bad := range []string{"", "unix", "unix:", ":x"} {
		if _, err := ParseSelector(bad); err == nil {
			t.Errorf("ParseSelector(%q) accepted", bad)
		}
	}
}
