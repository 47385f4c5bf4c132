package authn

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/bbolt"
)

type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func newTokens(t *testing.T) (*JoinTokens, *clock, *bbolt.DB) {
	t.Helper()
	db, err := bbolt.Open(filepath.Join(t.TempDir(), "r.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	c := &clock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	j, err := NewJoinTokens(db, c.Now)
	if err != nil {
		t.Fatal(err)
	}
	return j, c, db
}

func reasonOf(t *testing.T, err error) string {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v is not an *authn.Error", err)
	}
	return e.Reason
}

func TestJoinTokenIsSingleUse(t *testing.T) {
	j, _, _ := newTokens(t)
	ctx := context.Background()
	tok, _, err := j.Create(ctx, "node-a", 0)
	if err != nil {
		t.Fatal(err)
	}
	use, err := j.Consume(ctx, tok)
	if err != nil || use.Node != "node-a" {
		t.Fatalf("first use: %+v, %v", use, err)
	}
	_, err = j.Consume(ctx, tok)
	if reasonOf(t, err) != ReasonJoinTokenUsed || !strings.Contains(err.Error(), "already used") {
		t.Fatalf("second use: %v", err)
	}
}

func TestJoinTokenExpires(t *testing.T) {
	j, c, _ := newTokens(t)
	ctx := context.Background()
	tok, exp, err := j.Create(ctx, "node-a", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if !exp.Equal(c.Now().Add(time.Minute)) {
		t.Fatalf("expiry %s", exp)
	}
	c.Add(time.Minute)
	_, err = j.Consume(ctx, tok)
	if reasonOf(t, err) != ReasonJoinTokenExpired || !strings.Contains(err.Error(), "expired at") {
		t.Fatalf("expired use: %v", err)
	}
}

func TestJoinTokenUnknownAndMalformed(t *testing.T) {
	j, _, _ := newTokens(t)
	ctx := context.Background()
	tok, _, err := j.Create(ctx, "node-a", 0)
	if err != nil {
		t.Fatal(err)
	}
	last := "A"
	if strings.HasSuffix(tok, "A") {
		last = "B"
	}
	other := tok[:len(tok)-1] + last
	if _, err := j.Consume(ctx, other); reasonOf(t, err) != ReasonJoinTokenUnknown {
		t.Fatalf("unknown token: %v", err)
	}
	for _, bad := range []string{"", "cjt_", "x" + tok[1:], tok + "A"} {
		if _, err := j.Consume(ctx, bad); reasonOf(t, err) != ReasonJoinTokenMalformed {
			t.Errorf("token %q: %v, want malformed", bad, err)
		}
	}
}

func TestJoinTokenStoredOnlyAsHash(t *testing.T) {
	j, _, db := newTokens(t)
	tok, _, err := j.Create(context.Background(), "node-a", 0)
	if err != nil {
		t.Fatal(err)
	}
	err = db.View(func(tx *bbolt.Tx) error {
		return tx.Bucket(joinTokenBucket).ForEach(func(k, v []byte) error {
			if strings.Contains(string(k)+string(v), tok[len(joinTokenPrefix):]) {
				t.Error("the token is stored in clear")
			}
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestJoinTokenConcurrentUseHasOneWinner(t *testing.T) {
	j, _, _ := newTokens(t)
	ctx := context.Background()
	tok, _, err := j.Create(ctx, "node-a", 0)
	if err != nil {
		t.Fatal(err)
	}
	const n = 16
	var wg sync.WaitGroup
	results := make(chan error, n)
	for range n {
		wg.Go(func() {
			_, err := j.Consume(ctx, tok)
			results <- err
		})
	}
	wg.Wait()
	close(results)
	won := 0
	for err := range results {
		if err == nil {
			won++
		} else if reasonOf(t, err) != ReasonJoinTokenUsed {
			t.Errorf("loser: %v", err)
		}
	}
	if won != 1 {
		t.Fatalf("%d winners, want 1", won)
	}
}

func TestJoinTokenCreateValidates(t *testing.T) {
	j, _, _ := newTokens(t)
	ctx := context.Background()
	for _, tc := range []struct {
		node string
		ttl  time.Duration
		want string
	}{
		{"Node_A", 0, "invalid"},
		{"", 0, "invalid"},
		{"node-a", -time.Second, "negative"},
		{"node-a", 8 * 24 * time.Hour, "exceeds the maximum"},
	} {
		if _, _, err := j.Create(ctx, tc.node, tc.ttl); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Create(%q, %s): %v, want %q", tc.node, tc.ttl, err, tc.want)
		}
	}
}

func TestJoinTokenPruneKeepsRecentRecords(t *testing.T) {
	j, c, _ := newTokens(t)
	ctx := context.Background()
	old, _, _ := j.Create(ctx, "node-a", time.Minute)
	c.Add(12 * time.Hour)
	recent, _, _ := j.Create(ctx, "node-b", time.Minute)
	c.Add(13 * time.Hour)
	n, err := j.Prune(ctx)
	if err != nil || n != 1 {
		t.Fatalf("Prune: %d, %v; want 1", n, err)
	}
	if _, err := j.Consume(ctx, old); reasonOf(t, err) != ReasonJoinTokenUnknown {
		t.Errorf("pruned token: %v", err)
	}
	if _, err := j.Consume(ctx, recent); reasonOf(t, err) != ReasonJoinTokenExpired {
		t.Errorf("kept token: %v", err)
	}
}
