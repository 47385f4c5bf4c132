package authn

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/ca/refusal"
	"github.com/castellan-dev/castellan/ca/store"
	"github.com/castellan-dev/castellan/ca/store/boltstore"
	"github.com/castellan-dev/castellan/ca/store/faultstore"
	"github.com/castellan-dev/castellan/internal/clock/clocktest"
	"google.golang.org/grpc/codes"
)

// openDB opens a bbolt store, closed at the end of the test.
func openDB(t *testing.T) *boltstore.DB {
	t.Helper()
	db, err := boltstore.Open(filepath.Join(t.TempDir(), "r.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func newTokens(t *testing.T) (*JoinTokens, *clocktest.Clock, *boltstore.DB) {
	t.Helper()
	db := openDB(t)
	c := clocktest.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	j, err := NewJoinTokens(context.Background(), db, JoinTokensConfig{Clock: c})
	if err != nil {
		t.Fatal(err)
	}
	return j, c, db
}

func reasonOf(t *testing.T, err error) string {
	t.Helper()
	var e *refusal.Error
	if !errors.As(err, &e) || e.Code != codes.Unauthenticated || !strings.HasPrefix(e.Error(), "authn: ") {
		t.Fatalf("error %v is not an authentication refusal (Unauthenticated, \"authn: ...\")", err)
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
	c.Advance(time.Minute)
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
	err = db.View(context.Background(), func(tx store.Tx) error {
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
	c.Advance(12 * time.Hour)
	recent, _, _ := j.Create(ctx, "node-b", time.Minute)
	c.Advance(13 * time.Hour)
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

// TestJoinTokenConsumedOnceAcrossReplicas: two JoinTokens on one shared
// store (two replicas of the CA) racing for the same token: exactly one
// use succeeds, whichever replica serves it.
func TestJoinTokenConsumedOnceAcrossReplicas(t *testing.T) {
	shared := faultstore.Wrap(openDB(t), true)
	ctx := context.Background()
	var reps [2]*JoinTokens
	for i := range reps {
		j, err := NewJoinTokens(ctx, shared, JoinTokensConfig{})
		if err != nil {
			t.Fatal(err)
		}
		reps[i] = j
	}
	tok, _, err := reps[0].Create(ctx, "node-a", 0)
	if err != nil {
		t.Fatal(err)
	}
	const n = 16
	results := make(chan error, n)
	for i := range n {
		go func() {
			_, err := reps[i%2].Consume(ctx, tok)
			results <- err
		}()
	}
	won := 0
	for range n {
		if err := <-results; err == nil {
			won++
		} else if reasonOf(t, err) != ReasonJoinTokenUsed {
			t.Errorf("loser: %v, want join_token_used", err)
		}
	}
	if won != 1 {
		t.Fatalf("%d winners across two replicas, want 1", won)
	}
}

// TestJoinTokenOnUnavailableStore: while the store fails, a valid token is
// neither refused as unknown (what the failed read returned) nor spent:
// the error is the store's, and the token works once the store is back.
func TestJoinTokenOnUnavailableStore(t *testing.T) {
	flaky := faultstore.Wrap(openDB(t), false)
	ctx := context.Background()
	j, err := NewJoinTokens(ctx, flaky, JoinTokensConfig{})
	if err != nil {
		t.Fatal(err)
	}
	tok, _, err := j.Create(ctx, "node-a", 0)
	if err != nil {
		t.Fatal(err)
	}
	flaky.Fail(true)
	var ae *refusal.Error
	if _, err := j.Consume(ctx, tok); !errors.Is(err, store.ErrUnavailable) || errors.As(err, &ae) {
		t.Fatalf("consume on a failing store: %v, want ErrUnavailable and no authn refusal", err)
	}
	if _, _, err := j.Create(ctx, "node-b", 0); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("create on a failing store: %v, want ErrUnavailable", err)
	}
	if _, err := j.Prune(ctx); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("prune on a failing store: %v, want ErrUnavailable", err)
	}
	flaky.Fail(false)
	if use, err := j.Consume(ctx, tok); err != nil || use.Node != "node-a" {
		t.Fatalf("consume after the store came back: %+v, %v; want the unspent token accepted", use, err)
	}
}
