package authn

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	cav1 "github.com/castellan-dev/castellan/api/castellan/ca/v1"
	"github.com/castellan-dev/castellan/ca/refusal"
	"github.com/castellan-dev/castellan/integration/kubetest"
	"github.com/castellan-dev/castellan/internal/clock/clocktest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

const agentUser = "system:serviceaccount:castellan-system:castellan-agent"

// fakeJWT builds an unsigned token with the given claims; only the fake
// API server below "verifies" it.
func fakeJWT(t testing.TB, claims map[string]any) string {
	t.Helper()
	b, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"RS256"}`)) + "." + enc(b) + "." + enc([]byte("sig"))
}

// fakeReviewer is a fake clientset whose TokenReview answers status for
// every token and counts the reviews.
func fakeReviewer(st authenticationv1.TokenReviewStatus, delay time.Duration) (*fake.Clientset, *atomic.Int64) {
	var n atomic.Int64
	c := fake.NewClientset()
	c.PrependReactor("create", "tokenreviews", func(k8stesting.Action) (bool, runtime.Object, error) {
		n.Add(1)
		time.Sleep(delay)
		return true, &authenticationv1.TokenReview{Status: st}, nil
	})
	return c, &n
}

func okStatus(node string) authenticationv1.TokenReviewStatus {
	return authenticationv1.TokenReviewStatus{
		Authenticated: true,
		Audiences:     []string{K8sAudience},
		User: authenticationv1.UserInfo{
			Username: agentUser,
			Extra:    map[string]authenticationv1.ExtraValue{NodeNameExtra: {node}},
		},
	}
}

func satRequest(token string) *cav1.AttestAgentRequest {
	return &cav1.AttestAgentRequest{Attestation: &cav1.AttestAgentRequest_K8SSat{K8SSat: token}}
}

func newTestAttestor(t testing.TB, c kubernetes.Interface, cfg TokenReviewConfig) *TokenReviewAttestor {
	t.Helper()
	a, err := NewTokenReviewAttestor(c, "castellan-system", "castellan-agent", cfg)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func wantRefusal(t *testing.T, err error, reason, msgPart string) {
	t.Helper()
	if err == nil {
		t.Fatalf("attestation accepted, want refusal %s", reason)
	}
	if got := refusal.ReasonOf(err); got != reason {
		t.Fatalf("reason %q (%v), want %q", got, err, reason)
	}
	if st, _ := status.FromError(err); st.Code() != codes.Unauthenticated {
		t.Fatalf("gRPC code %v, want Unauthenticated", st.Code())
	}
	if !strings.Contains(err.Error(), msgPart) {
		t.Fatalf("message %q does not mention %q", err, msgPart)
	}
}

func TestTokenReviewCachesUntilTokenExpiry(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	clk := clocktest.NewClock(now)
	c, reviews := fakeReviewer(okStatus("node-a"), 0)
	a := newTestAttestor(t, c, TokenReviewConfig{Clock: clk, CacheTTL: time.Hour})
	tok := fakeJWT(t, map[string]any{"aud": []string{K8sAudience}, "exp": now.Add(2 * time.Minute).Unix()})

	for i := range 1000 {
		node, err := a.Attest(context.Background(), satRequest(tok))
		if err != nil || node != "node-a" {
			t.Fatalf("call %d: node %q, err %v", i, node, err)
		}
	}
	if n := reviews.Load(); n != 1 {
		t.Fatalf("1000 attestations cost %d TokenReviews, want 1", n)
	}
	// The token's own expiry ends the cache entry (before the 1h cap) and
	// the token is refused from then on without a review.
	clk.Advance(2 * time.Minute)
	_, err := a.Attest(context.Background(), satRequest(tok))
	wantRefusal(t, err, ReasonK8sTokenExpired, "expired")
	if n := reviews.Load(); n != 1 {
		t.Fatalf("expired token was reviewed (%d reviews)", n)
	}
}

func TestTokenReviewCacheTTLIsCapped(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	clk := clocktest.NewClock(now)
	c, reviews := fakeReviewer(okStatus("node-a"), 0)
	a := newTestAttestor(t, c, TokenReviewConfig{Clock: clk, CacheTTL: time.Minute})
	tok := fakeJWT(t, map[string]any{"aud": K8sAudience, "exp": now.Add(time.Hour).Unix()})
	for _, step := range []time.Duration{0, 59 * time.Second, time.Second, 30 * time.Second} {
		clk.Advance(step)
		if _, err := a.Attest(context.Background(), satRequest(tok)); err != nil {
			t.Fatal(err)
		}
	}
	// Reviewed at t=0, cached until t=60s, reviewed again at t=60s.
	if n := reviews.Load(); n != 2 {
		t.Fatalf("%d reviews, want 2 (cache capped at 1 minute)", n)
	}
}

func TestTokenReviewCacheIsBounded(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	c, reviews := fakeReviewer(okStatus("node-a"), 0)
	a := newTestAttestor(t, c, TokenReviewConfig{Clock: clocktest.NewClock(now), CacheTTL: time.Hour, CacheSize: 8})
	for i := range 100 {
		tok := fakeJWT(t, map[string]any{"aud": K8sAudience, "exp": now.Add(time.Hour).Unix(), "jti": i})
		if _, err := a.Attest(context.Background(), satRequest(tok)); err != nil {
			t.Fatal(err)
		}
	}
	a.mu.Lock()
	size := len(a.cache)
	a.mu.Unlock()
	if size > 8 {
		t.Fatalf("cache holds %d reviews, bound is 8", size)
	}
	if n := reviews.Load(); n != 100 {
		t.Fatalf("%d reviews for 100 distinct tokens", n)
	}
}

func TestTokenReviewConcurrentCallsShareOneReview(t *testing.T) {
	c, reviews := fakeReviewer(okStatus("node-a"), 50*time.Millisecond)
	a := newTestAttestor(t, c, TokenReviewConfig{})
	tok := fakeJWT(t, map[string]any{"aud": K8sAudience, "exp": time.Now().Add(time.Hour).Unix()})
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for range 64 {
		wg.Go(func() {
			if node, err := a.Attest(context.Background(), satRequest(tok)); err != nil || node != "node-a" {
				errs <- fmt.Errorf("node %q: %v", node, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := reviews.Load(); n != 1 {
		t.Fatalf("64 concurrent attestations cost %d reviews, want 1", n)
	}
}

func TestTokenReviewRefusals(t *testing.T) {
	exp := time.Now().Add(time.Hour).Unix()
	good := map[string]any{"aud": K8sAudience, "exp": exp}
	other := okStatus("node-a")
	other.User.Username = "system:serviceaccount:default:default"
	noNode := okStatus("node-a")
	noNode.User.Extra = nil
	tests := []struct {
		name    string
		claims  map[string]any
		raw     string
		review  authenticationv1.TokenReviewStatus
		reason  string
		msg     string
		reviews int64
	}{
		{name: "not a JWT", raw: "abc", reason: ReasonK8sTokenMalformed, msg: "not a JWT"},
		{name: "no expiry", claims: map[string]any{"aud": K8sAudience}, reason: ReasonK8sTokenMalformed, msg: "no expiry"},
		{name: "expired", claims: map[string]any{"aud": K8sAudience, "exp": time.Now().Add(-time.Minute).Unix()}, reason: ReasonK8sTokenExpired, msg: "expired"},
		{name: "wrong audience", claims: map[string]any{"aud": "istio-ca", "exp": exp}, reason: ReasonK8sWrongAudience, msg: `"castellan-ca"`},
		{name: "api refuses", claims: good, review: authenticationv1.TokenReviewStatus{Error: "token has been invalidated"}, reason: ReasonK8sTokenInvalid, msg: "invalidated", reviews: 1},
		{name: "api confirms other audience", claims: good, review: func() authenticationv1.TokenReviewStatus { s := okStatus("n"); s.Audiences = []string{"x"}; return s }(), reason: ReasonK8sWrongAudience, msg: "did not confirm", reviews: 1},
		{name: "other service account", claims: good, review: other, reason: ReasonK8sWrongAccount, msg: "system:serviceaccount:default:default", reviews: 1},
		{name: "not bound to a node", claims: good, review: noNode, reason: ReasonK8sNoNode, msg: NodeNameExtra, reviews: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, reviews := fakeReviewer(tt.review, 0)
			a := newTestAttestor(t, c, TokenReviewConfig{})
			tok := tt.raw
			if tok == "" {
				tok = fakeJWT(t, tt.claims)
			}
			for range 3 { // refusals are cached too
				_, err := a.Attest(context.Background(), satRequest(tok))
				wantRefusal(t, err, tt.reason, tt.msg)
			}
			if n := reviews.Load(); n != tt.reviews {
				t.Fatalf("%d reviews, want %d", n, tt.reviews)
			}
		})
	}
}

func TestTokenReviewAPIErrorIsUnavailableAndNotCached(t *testing.T) {
	var n atomic.Int64
	c := fake.NewClientset()
	c.PrependReactor("create", "tokenreviews", func(k8stesting.Action) (bool, runtime.Object, error) {
		if n.Add(1) == 1 {
			return true, nil, errors.New("connection refused")
		}
		return true, &authenticationv1.TokenReview{Status: okStatus("node-b")}, nil
	})
	a := newTestAttestor(t, c, TokenReviewConfig{})
	tok := fakeJWT(t, map[string]any{"aud": K8sAudience, "exp": time.Now().Add(time.Hour).Unix()})
	_, err := a.Attest(context.Background(), satRequest(tok))
	if st, _ := status.FromError(err); st.Code() != codes.Unavailable {
		t.Fatalf("API failure gave %v, want Unavailable", err)
	}
	if node, err := a.Attest(context.Background(), satRequest(tok)); err != nil || node != "node-b" {
		t.Fatalf("retry after API failure: %q, %v", node, err)
	}
}

func TestParseServiceAccount(t *testing.T) {
	if ns, n, err := ParseServiceAccount("castellan-system/castellan-agent"); err != nil || ns != "castellan-system" || n != "castellan-agent" {
		t.Fatalf("got %q %q %v", ns, n, err)
	}
	for _, bad := range []string{"", "a", "/b", "a/", "a/b/c"} {
		if _, _, err := ParseServiceAccount(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// countingTransport counts requests that create TokenReviews.
type countingTransport struct {
	next http.RoundTripper
	n    *atomic.Int64
}

func (c countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/tokenreviews") {
		c.n.Add(1)
	}
	return c.next.RoundTrip(r)
}

// TestTokenReviewAgainstRealAPIServer runs the attestor against a real
// kube-apiserver: real projected tokens bound to real pods on nodes.
func TestTokenReviewAgainstRealAPIServer(t *testing.T) {
	env := kubetest.Start(t)
	env.CreateNamespace("castellan-system")
	env.CreateServiceAccount("castellan-system", "castellan-agent")
	env.CreateServiceAccount("castellan-system", "impostor")
	env.CreateNode("node-a")
	env.CreatePod("castellan-system", "agent-a", "castellan-agent", "node-a")
	env.CreatePod("castellan-system", "impostor-a", "impostor", "node-a")

	cfg := env.RESTConfig()
	var reviews atomic.Int64
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper { return countingTransport{next: rt, n: &reviews} })
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	a := newTestAttestor(t, client, TokenReviewConfig{Registry: reg})
	ctx := context.Background()

	t.Run("agent token names its node; 1000 calls cost one review", func(t *testing.T) {
		tok := env.PodToken("castellan-system", "castellan-agent", "agent-a", K8sAudience, time.Hour)
		for i := range 1000 {
			node, err := a.Attest(ctx, satRequest(tok))
			if err != nil || node != "node-a" {
				t.Fatalf("call %d: node %q, err %v", i, node, err)
			}
		}
		if n := reviews.Load(); n != 1 {
			t.Fatalf("1000 attestations cost %d TokenReviews, want 1", n)
		}
		if got := testutil.ToFloat64(a.reviews.WithLabelValues("cache_hit")); got != 999 {
			t.Errorf("cache_hit metric %v, want 999", got)
		}
	})
	t.Run("wrong audience", func(t *testing.T) {
		tok := env.PodToken("castellan-system", "castellan-agent", "agent-a", kubetest.AudienceIstio, time.Hour)
		_, err := a.Attest(ctx, satRequest(tok))
		wantRefusal(t, err, ReasonK8sWrongAudience, "istio-ca")
	})
	t.Run("token of another service account", func(t *testing.T) {
		tok := env.PodToken("castellan-system", "impostor", "impostor-a", K8sAudience, time.Hour)
		_, err := a.Attest(ctx, satRequest(tok))
		wantRefusal(t, err, ReasonK8sWrongAccount, "system:serviceaccount:castellan-system:impostor")
	})
	t.Run("expired token", func(t *testing.T) {
		tok := env.PodToken("castellan-system", "castellan-agent", "agent-a", K8sAudience, 10*time.Minute)
		later := newTestAttestor(t, client, TokenReviewConfig{Clock: clocktest.NewClock(time.Now().Add(11 * time.Minute))})
		_, err := later.Attest(ctx, satRequest(tok))
		wantRefusal(t, err, ReasonK8sTokenExpired, "expired")
	})
	t.Run("token of a deleted pod", func(t *testing.T) {
		env.CreatePod("castellan-system", "agent-gone", "castellan-agent", "node-a")
		tok := env.PodToken("castellan-system", "castellan-agent", "agent-gone", K8sAudience, time.Hour)
		zero := int64(0)
		if err := env.Client().CoreV1().Pods("castellan-system").Delete(ctx, "agent-gone", metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
			t.Fatal(err)
		}
		// The apiserver checks the bound pod through its own informer,
		// which learns of the deletion shortly after it happens, and it
		// caches successful token authentications for 10s; each try uses a
		// fresh attestor so that no answer of ours is cached. 30s leaves
		// room for a loaded machine.
		var err error
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			if _, err = newTestAttestor(t, client, TokenReviewConfig{}).Attest(ctx, satRequest(tok)); err != nil {
				break
			}
		}
		wantRefusal(t, err, ReasonK8sTokenInvalid, "refused")
	})
	t.Run("forged signature", func(t *testing.T) {
		tok := env.PodToken("castellan-system", "castellan-agent", "agent-a", K8sAudience, time.Hour)
		parts := strings.Split(tok, ".")
		forged := parts[0] + "." + parts[1] + "." + base64.RawURLEncoding.EncodeToString([]byte("not the signature"))
		_, err := a.Attest(ctx, satRequest(forged))
		wantRefusal(t, err, ReasonK8sTokenInvalid, "refused")
	})
}

// BenchmarkTokenReviewCachedAttest measures an attestation whose review is
// cached: the cost every attestation after the first pays per token.
func BenchmarkTokenReviewCachedAttest(b *testing.B) {
	c, reviews := fakeReviewer(okStatus("node-a"), 0)
	a := newTestAttestor(b, c, TokenReviewConfig{})
	req := satRequest(fakeJWT(b, map[string]any{"aud": K8sAudience, "exp": time.Now().Add(time.Hour).Unix()}))
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := a.Attest(ctx, req); err != nil {
				b.Fatal(err)
			}
		}
	})
	if n := reviews.Load(); n != 1 {
		b.Fatalf("%d reviews", n)
	}
}

// TestTokenReviewerAnyServiceAccount: NewTokenReviewer (the Istio CA API's
// reviewer) admits any service account for its audience, names the pod
// and node when the token is bound to one, and refuses other users and
// audiences.
func TestTokenReviewerAnyServiceAccount(t *testing.T) {
	const aud = "istio-ca"
	tok := fakeJWT(t, map[string]any{"aud": aud, "exp": time.Now().Add(time.Hour).Unix()})
	st := func(user string, extra map[string]authenticationv1.ExtraValue, auds ...string) authenticationv1.TokenReviewStatus {
		return authenticationv1.TokenReviewStatus{Authenticated: true, Audiences: auds,
			User: authenticationv1.UserInfo{Username: user, Extra: extra}}
	}
	bound := map[string]authenticationv1.ExtraValue{NodeNameExtra: {"node-a"}, PodNameExtra: {"reviews-v1"}, PodUIDExtra: {"uid-1"}}
	for _, tt := range []struct {
		name   string
		status authenticationv1.TokenReviewStatus
		want   TokenIdentity
		reason string
	}{
		{name: "pod-bound", status: st("system:serviceaccount:bookinfo:reviews", bound, aud),
			want: TokenIdentity{Namespace: "bookinfo", ServiceAccount: "reviews", Node: "node-a", PodName: "reviews-v1", PodUID: "uid-1"}},
		{name: "not bound", status: st("system:serviceaccount:bookinfo:reviews", nil, aud),
			want: TokenIdentity{Namespace: "bookinfo", ServiceAccount: "reviews"}},
		{name: "not a service account", status: st("alice", nil, aud), reason: ReasonK8sNotSA},
		{name: "other audience", status: st("system:serviceaccount:bookinfo:reviews", nil, K8sAudience), reason: ReasonK8sWrongAudience},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, _ := fakeReviewer(tt.status, 0)
			r, err := NewTokenReviewer(c, aud, TokenReviewConfig{})
			if err != nil {
				t.Fatal(err)
			}
			got, err := r.Review(context.Background(), tok)
			if tt.reason != "" {
				wantRefusal(t, err, tt.reason, "")
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
	c, _ := fakeReviewer(st("system:serviceaccount:bookinfo:reviews", nil, aud), 0)
	r, _ := NewTokenReviewer(c, aud, TokenReviewConfig{})
	_, err := r.Review(context.Background(), fakeJWT(t, map[string]any{"aud": K8sAudience, "exp": time.Now().Add(time.Hour).Unix()}))
	wantRefusal(t, err, ReasonK8sWrongAudience, "the token is for audiences")
}
