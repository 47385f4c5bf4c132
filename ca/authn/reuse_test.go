package authn

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/internal/clock/clocktest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// TestJoinTokenReuseIsLoggedAndCounted: a second use of a spent token —
// before and after its expiry — is refused (Unauthenticated), counted in
// castellan_join_token_reuse_total and logged at warn level with the node,
// the token's ID and the caller's address, never the token. Unknown and
// expired-unused tokens are not counted as reuse.
func TestJoinTokenReuseIsLoggedAndCounted(t *testing.T) {
	db := openDB(t)
	c := clocktest.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	var logs bytes.Buffer
	reg := prometheus.NewRegistry()
	j, err := NewJoinTokens(context.Background(), db, JoinTokensConfig{Clock: c, Logger: slog.New(slog.NewJSONHandler(&logs, nil)), Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	ctx := peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(192, 0, 2, 7), Port: 4242}})
	tok, _, err := j.Create(ctx, "node-a", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	use, err := j.Consume(ctx, tok)
	if err != nil {
		t.Fatal(err)
	}
	if testutil.ToFloat64(j.reuses) != 0 || logs.Len() != 0 {
		t.Fatalf("first use counted or logged as reuse: %v %q", testutil.ToFloat64(j.reuses), logs.String())
	}
	_, err = j.Consume(ctx, tok)
	if status.Code(err) != codes.Unauthenticated || reasonOf(t, err) != ReasonJoinTokenUsed || !strings.Contains(err.Error(), "stolen") {
		t.Fatalf("second use: %v; want Unauthenticated join_token_used mentioning theft", err)
	}
	c.Advance(2 * time.Minute) // expired too: still a reuse
	if _, err := j.Consume(ctx, tok); reasonOf(t, err) != ReasonJoinTokenUsed {
		t.Fatalf("reuse after expiry: %v; want join_token_used", err)
	}
	unused, _, err := j.Create(ctx, "node-b", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	c.Advance(2 * time.Minute)
	_, _ = j.Consume(ctx, unused)
	_, _ = j.Consume(ctx, "cjt_"+strings.Repeat("A", 43))
	if got := testutil.ToFloat64(j.reuses); got != 2 {
		t.Fatalf("castellan_join_token_reuse_total = %v, want 2", got)
	}
	if n, err := testutil.GatherAndCount(reg, "castellan_join_token_reuse_total"); err != nil || n != 1 {
		t.Fatalf("metric not registered: %d %v", n, err)
	}
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	if len(lines) != 2 || strings.Contains(logs.String(), tok) || strings.Contains(logs.String(), tok[4:]) {
		t.Fatalf("want 2 reuse log lines without the token, got:\n%s", logs.String())
	}
	var rec map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &rec); err != nil {
		t.Fatal(err)
	}
	if rec["level"] != "WARN" || rec["node"] != "node-a" || rec["token_id"] != use.TokenID || rec["peer"] != "192.0.2.7:4242" ||
		!strings.Contains(rec["msg"].(string), "possible theft") {
		t.Fatalf("reuse log line %v; want WARN, node-a, token_id %s, the peer, 'possible theft'", rec, use.TokenID)
	}
}
