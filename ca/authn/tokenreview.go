package authn

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	cav1 "github.com/castellan-dev/castellan/api/castellan/ca/v1"
	"github.com/castellan-dev/castellan/ca/refusal"
	"github.com/castellan-dev/castellan/internal/clock"
	"github.com/castellan-dev/castellan/internal/k8sid"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Kubernetes attestation defaults.
const (
	// K8sAudience is the audience an agent's projected token must carry.
	K8sAudience = "castellan-ca"
	// NodeNameExtra is the TokenReview extra that names the node of the pod
	// a token is bound to.
	NodeNameExtra = "authentication.kubernetes.io/node-name"
	// PodNameExtra and PodUIDExtra name the pod a token is bound to.
	PodNameExtra = "authentication.kubernetes.io/pod-name"
	PodUIDExtra  = "authentication.kubernetes.io/pod-uid"
	// DefaultReviewCacheTTL caps how long a review is reused: a bound token
	// dies with its pod, and the cache must not outlive that by long.
	DefaultReviewCacheTTL = 5 * time.Minute
	// DefaultReviewCacheSize bounds the number of cached reviews.
	DefaultReviewCacheSize = 10000
	// negativeReviewTTL is how long a refused review is remembered, so that
	// a caller retrying a bad token does not cost one review per try.
	negativeReviewTTL = 30 * time.Second
	// maxTokenBytes bounds the token accepted for parsing.
	maxTokenBytes = 16 << 10
)

// Reasons for refused Kubernetes attestations.
const (
	ReasonK8sTokenMalformed = "k8s_token_malformed"
	ReasonK8sTokenExpired   = "k8s_token_expired"
	ReasonK8sWrongAudience  = "k8s_wrong_audience"
	ReasonK8sTokenInvalid   = "k8s_token_invalid" // the API server did not authenticate it
	ReasonK8sWrongAccount   = "k8s_wrong_service_account"
	ReasonK8sNoNode         = "k8s_no_node"
	ReasonK8sNotSA          = "k8s_not_service_account" // the token is not a service account's
)

// TokenReviewer authenticates Kubernetes service-account tokens for one
// audience with TokenReview, optionally only those of one service account
// and bound to a pod on a node (TokenReviewAttestor's rule).
//
// Reviews are cached by the SHA-256 of the token until the token expires,
// at most for the cache TTL, so a burst of calls with one token costs one
// TokenReview; concurrent calls with the same uncached token share one
// review. Expiry and audience are read from the token's payload without
// verifying it, only to refuse early with a clear message: a token is
// accepted only on the API server's word. It is safe for concurrent use.
type TokenReviewer struct {
	client      kubernetes.Interface
	audience    string
	username    string // system:serviceaccount:<ns>:<name>; "" admits any service account
	requireNode bool   // refuse tokens not bound to a pod on a node
	subject     string // what the token is called in messages
	clock       clock.Clock
	maxTTL      time.Duration
	maxSize     int
	reviews     *prometheus.CounterVec

	mu       sync.Mutex
	cache    map[[32]byte]reviewResult
	inflight map[[32]byte]*reviewCall
}

// TokenIdentity is what the API server said about a token: its service
// account and, for a token bound to a pod, the pod and its node.
type TokenIdentity struct {
	Namespace      string
	ServiceAccount string
	// Node is the node of the pod the token is bound to ("" if none).
	Node string
	// PodName and PodUID name the pod the token is bound to ("" if none).
	PodName string
	PodUID  string
}

// TokenReviewAttestor attests agents on Kubernetes: the request's k8s_sat
// must be a service-account token for the configured agent service account,
// with audience K8sAudience, bound to a pod on a node; the API server
// checks it (TokenReview) and names the node (NodeNameExtra).
//
// Reviews are cached by the SHA-256 of the token until the token expires,
// at most for the cache TTL, so a burst of attestations with one token
// costs one TokenReview; concurrent attestations with the same uncached
// token share one review. Expiry and audience are read from the token's
// payload without verifying it, only to refuse early with a clear message:
// a token is accepted only on the API server's word. It is safe for
// concurrent use.
type TokenReviewAttestor struct {
	*TokenReviewer
}

// reviewResult is a cached outcome: an identity, or a refusal.
type reviewResult struct {
	id      TokenIdentity
	err     *refusal.Error
	expires time.Time
}

// reviewCall is a review in progress that others wait for.
type reviewCall struct {
	done chan struct{}
	res  reviewResult
	err  error // transient failure: not cached
}

// TokenReviewConfig holds the settings of a TokenReviewer or
// TokenReviewAttestor; its zero value is the default.
type TokenReviewConfig struct {
	// Clock expires tokens and cached reviews (nil: the wall clock).
	Clock clock.Clock
	// CacheTTL bounds how long a review is cached (<= 0:
	// DefaultReviewCacheTTL).
	CacheTTL time.Duration
	// CacheSize bounds how many reviews are cached (<= 0:
	// DefaultReviewCacheSize).
	CacheSize int
	// Registry, if set, receives
	// castellan_ca_k8s_token_reviews_total{result} (reviews sent to the API
	// server, and cache hits).
	Registry *prometheus.Registry
}

// NewTokenReviewAttestor returns an attestor that reviews tokens with
// client and admits only the service account agentNamespace/agentName.
func NewTokenReviewAttestor(client kubernetes.Interface, agentNamespace, agentName string, cfg TokenReviewConfig) (*TokenReviewAttestor, error) {
	if client == nil {
		return nil, errors.New("authn: Kubernetes attestation needs a Kubernetes client")
	}
	if agentNamespace == "" || agentName == "" {
		return nil, fmt.Errorf("authn: agent service account %q/%q: want <namespace>/<name>, e.g. castellan-system/castellan-agent", agentNamespace, agentName)
	}
	r := newTokenReviewer(client, K8sAudience, "k8s_sat", cfg)
	r.username = k8sid.ServiceAccount{Namespace: agentNamespace, Name: agentName}.Username()
	r.requireNode = true
	return &TokenReviewAttestor{TokenReviewer: r}, nil
}

// NewTokenReviewer returns a reviewer of service-account tokens for
// audience that admits any service account, bound to a pod or not.
func NewTokenReviewer(client kubernetes.Interface, audience string, cfg TokenReviewConfig) (*TokenReviewer, error) {
	if client == nil {
		return nil, errors.New("authn: Kubernetes token authentication needs a Kubernetes client")
	}
	if audience == "" {
		return nil, errors.New("authn: Kubernetes token authentication needs an audience")
	}
	return newTokenReviewer(client, audience, "the token", cfg), nil
}

func newTokenReviewer(client kubernetes.Interface, audience, subject string, cfg TokenReviewConfig) *TokenReviewer {
	if cfg.CacheTTL <= 0 {
		cfg.CacheTTL = DefaultReviewCacheTTL
	}
	if cfg.CacheSize <= 0 {
		cfg.CacheSize = DefaultReviewCacheSize
	}
	r := &TokenReviewer{
		client:   client,
		audience: audience,
		subject:  subject,
		clock:    clock.OrSystem(cfg.Clock),
		maxTTL:   cfg.CacheTTL,
		maxSize:  cfg.CacheSize,
		cache:    map[[32]byte]reviewResult{},
		inflight: map[[32]byte]*reviewCall{},
	}
	if cfg.Registry != nil {
		r.reviews = prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "castellan_ca_k8s_token_reviews_total",
			Help: "Kubernetes token attestations by result: reviewed_ok, reviewed_refused, review_error, cache_hit, refused_early.",
		}, []string{"result"})
		cfg.Registry.MustRegister(r.reviews)
	}
	return r
}

// ParseServiceAccount splits "namespace/name".
func ParseServiceAccount(s string) (namespace, name string, err error) {
	ns, n, ok := strings.Cut(s, "/")
	if !ok || ns == "" || n == "" || strings.Contains(n, "/") {
		return "", "", fmt.Errorf("authn: service account %q: want <namespace>/<name>, e.g. castellan-system/castellan-agent", s)
	}
	return ns, n, nil
}

// Attest implements NodeAttestor for requests carrying k8s_sat.
func (a *TokenReviewAttestor) Attest(ctx context.Context, req *cav1.AttestAgentRequest) (string, error) {
	token := req.GetK8SSat()
	if token == "" {
		return "", Fail(ReasonNoAttestation, "request carries no Kubernetes service-account token (k8s_sat)")
	}
	id, err := a.Review(ctx, token)
	if err != nil {
		return "", err
	}
	return id.Node, nil
}

// Review authenticates token: it returns the token's identity, an *refusal.Error
// (Unauthenticated) if the token is refused, or an Unavailable status
// error if the API server cannot be asked.
func (a *TokenReviewer) Review(ctx context.Context, token string) (TokenIdentity, error) {
	now := a.clock.Now()
	claims, err := a.precheck(token, now)
	if err != nil {
		a.count("refused_early")
		return TokenIdentity{}, err
	}
	key := sha256.Sum256([]byte(token))
	res, err := a.lookupOrReview(ctx, key, token, claims.expiry(), now)
	if err != nil {
		return TokenIdentity{}, err
	}
	if res.err != nil {
		return TokenIdentity{}, res.err
	}
	return res.id, nil
}

// jwtClaims are the unverified claims read from a token's payload.
type jwtClaims struct {
	Exp int64           `json:"exp"`
	Aud json.RawMessage `json:"aud"` // a string or a list of strings
}

func (c jwtClaims) expiry() time.Time { return time.Unix(c.Exp, 0) }

func (c jwtClaims) audiences() []string {
	var one string
	if json.Unmarshal(c.Aud, &one) == nil {
		return []string{one}
	}
	var many []string
	_ = json.Unmarshal(c.Aud, &many)
	return many
}

// precheck refuses, without asking the API server, a token that is not a
// JWT, has expired or is not for the audience by its own (unverified) word.
func (a *TokenReviewer) precheck(token string, now time.Time) (jwtClaims, error) {
	var c jwtClaims
	parts := strings.Split(token, ".")
	if len(token) > maxTokenBytes || len(parts) != 3 {
		return c, Fail(ReasonK8sTokenMalformed, "%s is not a JWT; pass the projected service-account token file's contents", a.subject)
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return c, Fail(ReasonK8sTokenMalformed, "%s payload is not base64url: %v", a.subject, err)
	}
	if err := json.Unmarshal(payload, &c); err != nil {
		return c, Fail(ReasonK8sTokenMalformed, "%s payload is not a JSON claim set: %v", a.subject, err)
	}
	if c.Exp == 0 {
		return c, Fail(ReasonK8sTokenMalformed, "%s has no expiry: use a projected service-account token (legacy secret tokens are not accepted)", a.subject)
	}
	if !now.Before(c.expiry()) {
		return c, Fail(ReasonK8sTokenExpired, "%s expired at %s; the kubelet refreshes projected tokens, so re-read the token file", a.subject, c.expiry().UTC().Format(time.RFC3339))
	}
	if aud := c.audiences(); !slices.Contains(aud, a.audience) {
		return c, Fail(ReasonK8sWrongAudience, "%s is for audiences %q, not %q; project the token with audience %s", a.subject, aud, a.audience, a.audience)
	}
	return c, nil
}

// lookupOrReview returns the cached result for key, or reviews the token
// (once, however many callers ask concurrently) and caches the outcome.
func (a *TokenReviewer) lookupOrReview(ctx context.Context, key [32]byte, token string, exp, now time.Time) (reviewResult, error) {
	a.mu.Lock()
	if res, ok := a.cache[key]; ok {
		if now.Before(res.expires) {
			a.mu.Unlock()
			a.count("cache_hit")
			return res, nil
		}
		delete(a.cache, key)
	}
	if call, ok := a.inflight[key]; ok {
		a.mu.Unlock()
		select {
		case <-call.done:
			return call.res, call.err
		case <-ctx.Done():
			return reviewResult{}, status.FromContextError(ctx.Err()).Err()
		}
	}
	call := &reviewCall{done: make(chan struct{})}
	a.inflight[key] = call
	a.mu.Unlock()

	call.res, call.err = a.review(ctx, token)
	a.mu.Lock()
	delete(a.inflight, key)
	if call.err == nil {
		ttl := a.maxTTL
		if call.res.err != nil {
			ttl = negativeReviewTTL
		}
		call.res.expires = now.Add(ttl)
		if exp.Before(call.res.expires) {
			call.res.expires = exp
		}
		a.store(key, call.res, now)
	}
	a.mu.Unlock()
	close(call.done)
	return call.res, call.err
}

// store adds res to the cache, making room if it is full: expired entries
// go first, then the one that expires soonest. Called with mu held.
func (a *TokenReviewer) store(key [32]byte, res reviewResult, now time.Time) {
	if len(a.cache) >= a.maxSize {
		var soonest [32]byte
		var soonestAt time.Time
		for k, r := range a.cache {
			if !now.Before(r.expires) {
				delete(a.cache, k)
				continue
			}
			if soonestAt.IsZero() || r.expires.Before(soonestAt) {
				soonest, soonestAt = k, r.expires
			}
		}
		if len(a.cache) >= a.maxSize {
			delete(a.cache, soonest)
		}
	}
	a.cache[key] = res
}

// review asks the API server about token. A refusal is a result (cached);
// an API failure is an error (not cached), Unavailable to the caller.
func (a *TokenReviewer) review(ctx context.Context, token string) (reviewResult, error) {
	tr, err := a.client.AuthenticationV1().TokenReviews().Create(ctx, &authenticationv1.TokenReview{
		Spec: authenticationv1.TokenReviewSpec{Token: token, Audiences: []string{a.audience}},
	}, metav1.CreateOptions{})
	if err != nil {
		a.count("review_error")
		return reviewResult{}, status.Errorf(codes.Unavailable, "authn: cannot review %s with the Kubernetes API server (retry later; check the CA's RBAC allows tokenreviews create): %v", a.subject, err)
	}
	res := a.judge(tr.Status)
	if res.err != nil {
		a.count("reviewed_refused")
	} else {
		a.count("reviewed_ok")
	}
	return res, nil
}

// judge turns a review's status into an identity or a refusal.
func (a *TokenReviewer) judge(st authenticationv1.TokenReviewStatus) reviewResult {
	switch {
	case !st.Authenticated:
		msg := st.Error
		if msg == "" {
			msg = "not authenticated"
		}
		return reviewResult{err: Fail(ReasonK8sTokenInvalid, "the Kubernetes API server refused %s: %s", a.subject, msg)}
	case !slices.Contains(st.Audiences, a.audience):
		return reviewResult{err: Fail(ReasonK8sWrongAudience, "the Kubernetes API server did not confirm audience %q for %s (got %q)", a.audience, a.subject, st.Audiences)}
	case a.username != "" && st.User.Username != a.username:
		return reviewResult{err: Fail(ReasonK8sWrongAccount, "%s belongs to %q; only the agent service account %q may attest agents", a.subject, st.User.Username, a.username)}
	}
	acct, err := k8sid.FromUsername(st.User.Username)
	if err != nil {
		return reviewResult{err: Fail(ReasonK8sNotSA, "%s belongs to %q, which is not a service account", a.subject, st.User.Username)}
	}
	id := TokenIdentity{Namespace: acct.Namespace, ServiceAccount: acct.Name,
		PodName: onlyExtra(st, PodNameExtra), PodUID: onlyExtra(st, PodUIDExtra)}
	nodes := st.User.Extra[NodeNameExtra]
	switch {
	case len(nodes) == 0 && !a.requireNode:
		return reviewResult{id: id}
	case len(nodes) != 1:
		return reviewResult{err: Fail(ReasonK8sNoNode, "%s is not bound to a pod on a node (no %s in the review); use a projected token of the agent's pod", a.subject, NodeNameExtra)}
	case ValidateNodeName(nodes[0]) != nil:
		return reviewResult{err: Fail(ReasonK8sNoNode, "the review names node %q, which is not a valid node name", nodes[0])}
	}
	id.Node = nodes[0]
	return reviewResult{id: id}
}

// onlyExtra returns the single value of a review's extra key ("" unless
// there is exactly one).
func onlyExtra(st authenticationv1.TokenReviewStatus, key string) string {
	if v := st.User.Extra[key]; len(v) == 1 {
		return v[0]
	}
	return ""
}

func (a *TokenReviewer) count(result string) {
	if a.reviews != nil {
		a.reviews.WithLabelValues(result).Inc()
	}
}
