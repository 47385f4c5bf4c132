package ledger

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/internal/clock/clocktest"
)

// fakeClock is a settable clock for tests.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// openTest opens a ledger in a temporary directory, closed at cleanup.
func openTest(t testing.TB, clock *fakeClock) (*Ledger, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ledger.db")
	l, err := Open(path, Config{Clock: clocktest.Func(clock.Now)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l, path
}

// certEvent returns an issuance event for serial n.
func certEvent(n int, id, node string, notAfter time.Time) entry.Event {
	return entry.Event{
		Kind: entry.KindIssuance, Serial: fmt.Sprintf("%x", 0x1000+n), SPIFFEID: id, Node: node,
		NotBefore: notAfter.Add(-time.Hour), NotAfter: notAfter,
		PublicKeySHA256: fmt.Sprintf("%064x", n), CertDER: []byte(fmt.Sprintf("cert-%d", n)),
	}
}

// fill appends n issuance events spread over a few SPIFFE IDs and nodes.
func fill(t testing.TB, l *Ledger, n int, notAfter time.Time) {
	t.Helper()
	fillFrom(t, l, 0, n, notAfter)
}

// fillFrom appends issuance events for serials start..start+n-1.
func fillFrom(t testing.TB, l *Ledger, start, n int, notAfter time.Time) {
	t.Helper()
	const batch = 500
	for i := start; i < start+n; i += batch {
		evs := make([]entry.Event, 0, batch)
		for j := i; j < i+batch && j < start+n; j++ {
			evs = append(evs, certEvent(j, fmt.Sprintf("spiffe://cluster.local/ns/ns%d/sa/sa%d", j%7, j%13), fmt.Sprintf("node-%d", j%5), notAfter))
		}
		if _, err := l.Append(context.Background(), evs...); err != nil {
			t.Fatal(err)
		}
	}
}

// closed reports whether ch is closed.
func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
