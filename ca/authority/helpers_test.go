package authority

import (
	"log/slog"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/ca/authority/leaf"
	"github.com/castellan-dev/castellan/internal/clock/clocktest"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

var testTD = spiffeid.RequireTrustDomainFromString("example.org")

// testClock is a settable clock for one test.
type testClock struct{ now time.Time }

func (c *testClock) Now() time.Time { return c.now }

func newTestClock() *testClock {
	return &testClock{now: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}
}

// newTestAuthority returns an Authority with a generated CA in a temp dir.
func newTestAuthority(t testing.TB, clock *testClock) *Authority {
	t.Helper()
	a, err := New(Config{TrustDomain: testTD, DataDir: t.TempDir(), Clock: clocktest.Func(clock.Now)})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return a
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// backdate is leaf.Backdate, for tests whose variables named leaf hide the
// package.
const backdate = leaf.Backdate
