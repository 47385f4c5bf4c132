package quota

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/ca/refusal"
	"github.com/castellan-dev/castellan/internal/clock/clocktest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func newLimiter(t *testing.T, node Limit, perTTL int, clk *clocktest.Clock) (*Limiter, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	l, err := New(Config{Node: node, IdentityPerTTL: perTTL, Clock: clk, Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	return l, reg
}

// step is one Take (or a clock advance) and its expected outcome.
type step struct {
	advance        time.Duration
	node, identity string
	ttl            time.Duration
	want           Kind // "" for granted
	retry          time.Duration
}

func TestTake(t *testing.T) {
	h := time.Hour
	cases := []struct {
		name   string
		node   Limit
		perTTL int
		steps  []step
	}{
		{"identity burst then refill at TTL/perTTL", Limit{100, time.Second}, 2, []step{
			{node: "n", identity: "a", ttl: h}, {node: "n", identity: "a", ttl: h},
			{node: "n", identity: "a", ttl: h, want: KindIdentity, retry: 30 * time.Minute},
			{advance: 29 * time.Minute, node: "n", identity: "a", ttl: h, want: KindIdentity, retry: time.Minute},
			{advance: time.Minute, node: "n", identity: "a", ttl: h},
			{node: "n", identity: "b", ttl: h}, // another identity is not affected
		}},
		{"node quota spans identities", Limit{2, 10 * time.Second}, 4, []step{
			{node: "n", identity: "a", ttl: h}, {node: "n", identity: "b", ttl: h},
			{node: "n", identity: "c", ttl: h, want: KindNode, retry: 10 * time.Second},
			{node: "m", identity: "c", ttl: h}, // another node is served
			{advance: 5 * time.Second, node: "n", identity: "c", ttl: h, want: KindNode, retry: 5 * time.Second},
			{advance: 5 * time.Second, node: "n", identity: "c", ttl: h},
		}},
		{"refused identity does not spend the node's token", Limit{2, h}, 1, []step{
			{node: "n", identity: "a", ttl: h},
			{node: "n", identity: "a", ttl: h, want: KindIdentity, retry: h},
			{node: "n", identity: "b", ttl: h}, // the node still has its second token
		}},
		{"short TTLs renew often; zero is floored at MinTTL", Limit{100, time.Millisecond}, 2, []step{
			{node: "n", identity: "a", ttl: 12 * time.Second}, {node: "n", identity: "a", ttl: 12 * time.Second},
			{advance: 6 * time.Second, node: "n", identity: "a", ttl: 12 * time.Second},
			{node: "n", identity: "z", ttl: 0}, {node: "n", identity: "z", ttl: 0},
			{advance: 100 * time.Millisecond, node: "n", identity: "z", ttl: 0, want: KindIdentity, retry: 400 * time.Millisecond},
		}},
		{"no node: limited per identity only", Limit{1, time.Hour}, 2, []step{
			{node: "", identity: "a", ttl: h}, {node: "", identity: "b", ttl: h}, {node: "", identity: "a", ttl: h},
			{node: "", identity: "a", ttl: h, want: KindIdentity, retry: 30 * time.Minute},
		}},
		{"identity on another node has its own bucket", Limit{100, time.Second}, 1, []step{
			{node: "n", identity: "a", ttl: h},
			{node: "m", identity: "a", ttl: h},
			{node: "n", identity: "a", ttl: h, want: KindIdentity, retry: h},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			clk := clocktest.NewClock(time.Unix(1e9, 0))
			l, _ := newLimiter(t, tc.node, tc.perTTL, clk)
			for i, s := range tc.steps {
				clk.Advance(s.advance)
				err := l.Take(s.node, s.identity, s.ttl)
				var ex *Exceeded
				switch {
				case s.want == "" && err != nil:
					t.Fatalf("step %d: %v, want granted", i, err)
				case s.want != "" && !errors.As(err, &ex):
					t.Fatalf("step %d: %v, want %s quota exceeded", i, err, s.want)
				case s.want != "" && (ex.Kind != s.want || ex.RetryAfter.Round(time.Millisecond) != s.retry):
					t.Fatalf("step %d: %s quota, retry %s; want %s, retry %s", i, ex.Kind, ex.RetryAfter, s.want, s.retry)
				}
			}
		})
	}
}

func TestExceededSaysWhichQuotaAndWhenToRetry(t *testing.T) {
	clk := clocktest.NewClock(time.Unix(1e9, 0))
	l, reg := newLimiter(t, Limit{1, time.Minute}, 4, clk)
	if err := l.Take("node-1", "spiffe://td/ns/a/sa/b", time.Hour); err != nil {
		t.Fatal(err)
	}
	err := l.Take("node-1", "spiffe://td/ns/a/sa/c", time.Hour)
	if !errors.Is(err, ErrExceeded) {
		t.Fatalf("err = %v", err)
	}
	if r := refusal.ReasonOf(err); r != "quota_node" {
		t.Errorf("reason %q, want quota_node (castellan_csr_total)", r)
	}
	for _, want := range []string{"node issuance quota exceeded", "node-1", "retry in 1m0s"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("message %q does not say %q", err, want)
		}
	}
	st := status.Convert(err)
	if st.Code() != codes.ResourceExhausted || st.Message() != err.Error() {
		t.Errorf("status = %v %q, want ResourceExhausted with the message", st.Code(), st.Message())
	}
	if d := st.Details(); len(d) != 1 || d[0].(*errdetails.RetryInfo).GetRetryDelay().AsDuration() != time.Minute {
		t.Errorf("status details = %v, want RetryInfo of 1m", d)
	}
	if got := testutil.ToFloat64(l.refusals.WithLabelValues("node")); got != 1 {
		t.Errorf("castellan_quota_refusals_total{quota=node} = %v, want 1", got)
	}
	if n, _ := testutil.GatherAndCount(reg, "castellan_quota_refusals_total"); n != 2 {
		t.Errorf("metric has %d series, want node and identity", n)
	}
}

// A node whose every identity is due at once (after a CA outage) is
// served in full by the defaults, and the node's quota then refills.
func TestDefaultsServeAWholeNodeAfterAnOutage(t *testing.T) {
	clk := clocktest.NewClock(time.Unix(1e9, 0))
	cfg := Defaults(time.Hour)
	cfg.Clock = clk
	l, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for round := range 2 {
		for i := range NodeIdentities {
			if err := l.Take("n", fmt.Sprintf("id-%d", i), time.Hour); err != nil {
				t.Fatalf("round %d, identity %d: %v", round, i, err)
			}
		}
	}
	if err := l.Take("n", "one-more", time.Hour); !errors.Is(err, ErrExceeded) {
		t.Fatalf("the %dth issuance in a burst: %v, want refused", 2*NodeIdentities+1, err)
	}
	// Steady state: each identity renewed twice per TTL fits the refill.
	clk.Advance(time.Hour)
	for i := range NodeIdentities {
		for range 2 {
			if err := l.Take("n", fmt.Sprintf("id-%d", i), time.Hour); err != nil {
				t.Fatalf("identity %d an hour later: %v", i, err)
			}
		}
	}
}

func TestMemoryIsBounded(t *testing.T) {
	clk := clocktest.NewClock(time.Unix(1e9, 0))
	l, err := New(Config{Node: Limit{10, time.Second}, IdentityPerTTL: 2, MaxBuckets: 100, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 1000 {
		_ = l.Take(fmt.Sprintf("n%d", i), "a", time.Hour)
	}
	if n := l.Len(); n > 100 {
		t.Fatalf("%d buckets kept, want at most 100", n)
	}
	// Idle buckets that have refilled are forgotten.
	clk.Advance(2 * time.Hour)
	_ = l.Take("fresh", "a", time.Hour)
	if n := l.Len(); n != 2 {
		t.Fatalf("%d buckets kept after everything refilled, want the 2 just used", n)
	}
}

// A bucket used recently but not yet full survives the sweep: forgetting
// it would hand its node a fresh burst.
func TestDrainedBucketIsNotForgotten(t *testing.T) {
	clk := clocktest.NewClock(time.Unix(1e9, 0))
	l, _ := newLimiter(t, Limit{1, time.Hour}, 4, clk)
	_ = l.Take("n", "a", time.Hour)
	clk.Advance(2 * time.Minute) // a sweep runs on the next Take
	_ = l.Take("m", "a", time.Hour)
	if err := l.Take("n", "b", time.Hour); !errors.Is(err, ErrExceeded) {
		t.Fatalf("drained node bucket was forgotten: %v", err)
	}
}

// A revocation refills the revoked identity's buckets (all its entries)
// on that node, not the node's bucket nor other identities'.
func TestForgiveRefillsTheRevokedIdentity(t *testing.T) {
	clk := clocktest.NewClock(time.Unix(1e9, 0))
	l, _ := newLimiter(t, Limit{5, time.Hour}, 1, clk)
	for _, id := range []string{Identity("spiffe://td/a", "e1"), Identity("spiffe://td/a", "e2"), Identity("spiffe://td/ab", "e3")} {
		if err := l.Take("n", id, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	l.Forgive("n", "spiffe://td/a")
	for _, id := range []string{Identity("spiffe://td/a", "e1"), Identity("spiffe://td/a", "e2")} {
		if err := l.Take("n", id, time.Hour); err != nil {
			t.Fatalf("%s after Forgive: %v", id, err)
		}
	}
	if err := l.Take("n", Identity("spiffe://td/ab", "e3"), time.Hour); !errors.Is(err, ErrExceeded) {
		t.Fatalf("another identity was forgiven too: %v", err)
	}
	// The node's bucket (5) was not refilled: 5 taken.
	if err := l.Take("n", Identity("spiffe://td/c", "e4"), time.Hour); !errors.Is(err, ErrExceeded) {
		t.Fatalf("the node's bucket was refilled: %v", err)
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	for _, cfg := range []Config{
		{Node: Limit{0, time.Second}, IdentityPerTTL: 1},
		{Node: Limit{1, 0}, IdentityPerTTL: 1},
		{Node: Limit{1, time.Second}, IdentityPerTTL: 0},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) accepted", cfg)
		}
	}
}
