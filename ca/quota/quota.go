// Package quota limits how many certificates the CA issues to one node and
// to one identity on a node, so that one agent (or a stolen agent key)
// cannot fill the ledger's disk and stop issuance for every node.
//
// Each node has a token bucket, and so has each identity a node holds
// (node, entry or pod, SPIFFE ID). An issuance takes one token from both,
// or from neither when either is empty. A bucket holds at most Burst tokens
// and gains one every Every. Buckets that have refilled to Burst carry no
// state and are forgotten, and at most MaxBuckets are kept (the least
// recently used one is dropped first), so memory stays bounded. Requests
// from no known node (Istio callers the CA cannot place) have identity
// buckets only.
//
// # Defaults, and how they are derived
//
// An agent renews an SVID at about half its lifetime, so an identity is
// renewed about twice per TTL in steady state. Defaults allows
// IdentityPerTTL (8) per TTL of that identity's certificates, at once or
// spread out: four times the steady rate, for pod restarts, a failed
// response, jitter, a few replacements of revoked certificates. The
// identity bucket's Every is the certificate's TTL / 8, so identities with
// short TTLs are not starved; a loop on one identity stops after 8. A
// revocation (Forgive) refills the revoked identity's buckets, so the
// replacement an operator asked for is never refused by them.
//
// A node is sized for NodeIdentities (256) identities: Kubernetes allows 110
// pods per node by default, and 256 leaves room for unix entries. Its
// bucket refills at 256 × 4 tokens per default TTL (1024 per hour with the
// 1h default TTL: about 0.5 KB/s of ledger per node at most), and holds
// Burst = 2 × 256 = 512 tokens, so that after a CA outage a node whose
// every identity is due at once gets all of them renewed in one go (one
// BatchSignX509SVID, or a few), twice over. A batch larger than what is
// left in the node's bucket is served in part: the items past the quota
// fail with ResourceExhausted and the agent retries them after RetryAfter.
package quota

import (
	"cmp"
	"container/list"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/castellan-dev/castellan/ca/refusal"
	"github.com/castellan-dev/castellan/internal/clock"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
)

// Kind names a quota in refusals and in the metric's label.
type Kind string

// The quotas.
const (
	KindNode     Kind = "node"
	KindIdentity Kind = "identity"
)

// Defaults' parameters (see the package documentation).
const (
	RenewalsPerTTL    = 4 // per identity, sustained, for sizing a node
	IdentityPerTTL    = 8
	NodeIdentities    = 256
	DefaultMaxBuckets = 100_000
	// MinTTL floors the TTL a bucket is sized from. It is low on purpose:
	// identities with short TTLs (seconds, in tests and demos) renew that
	// often. A caller asking for tiny TTLs to refill its identity buckets
	// fast is still held by its node's bucket, sized from the CA's
	// default TTL.
	MinTTL = time.Second
)

// Limit is a token bucket's size: at most Burst tokens, one more every
// Every.
type Limit struct {
	Burst int
	Every time.Duration
}

// String says the limit in words: "512 at once, 1024 per hour".
func (l Limit) String() string {
	if l.Every <= 0 {
		return fmt.Sprintf("%d at once", l.Burst)
	}
	return fmt.Sprintf("%d at once, %.4g per hour", l.Burst, float64(time.Hour)/float64(l.Every))
}

// Config sizes the quotas. Zero fields take Defaults' values, except Node
// and Identity which must be set (use Defaults).
type Config struct {
	// Node limits the certificates issued to one node.
	Node Limit
	// IdentityPerTTL is how many certificates one identity on one node
	// may get per lifetime of its certificates (burst and refill).
	IdentityPerTTL int
	// MaxBuckets bounds the buckets kept in memory (0: DefaultMaxBuckets).
	MaxBuckets int
	// Clock refills the buckets (nil: the wall clock).
	Clock clock.Clock
	// Registry, when set, receives castellan_quota_refusals_total.
	Registry prometheus.Registerer
}

// Defaults returns the quotas derived from the CA's default workload TTL.
func Defaults(defaultTTL time.Duration) Config {
	ttl := max(defaultTTL, MinTTL)
	return Config{
		Node:           Limit{Burst: 2 * NodeIdentities, Every: ttl / (NodeIdentities * RenewalsPerTTL)},
		IdentityPerTTL: IdentityPerTTL,
	}
}

// Exceeded describes an issuance over a quota. Take returns it inside a
// *refusal.Error (Refusal): ResourceExhausted, reason "quota_<kind>", with
// a message saying which quota and when to retry and a RetryInfo detail.
type Exceeded struct {
	Kind Kind
	// Node and Identity name the bucket (Identity empty for KindNode).
	Node, Identity string
	Limit          Limit
	RetryAfter     time.Duration
}

// Error implements error.
func (e *Exceeded) Error() string {
	who := "node " + e.Node
	if e.Kind == KindIdentity {
		who = fmt.Sprintf("identity %s on node %s", e.Identity, cmp.Or(e.Node, "(none)"))
	}
	return fmt.Sprintf("quota: %s issuance quota exceeded for %s (at most %s); retry in %s",
		e.Kind, who, e.Limit, e.RetryAfter.Round(time.Second))
}

// Refusal is e as the caller is told it: ResourceExhausted, reason
// "quota_node" or "quota_identity" (castellan_csr_total), RetryAfter as a
// RetryInfo detail so gRPC clients back off for as long as they are told.
func (e *Exceeded) Refusal() *refusal.Error {
	return &refusal.Error{Code: codes.ResourceExhausted, Reason: "quota_" + string(e.Kind), Err: e, RetryAfter: e.RetryAfter}
}

// Is makes errors.Is(err, ErrExceeded) true.
func (e *Exceeded) Is(target error) bool { return target == ErrExceeded }

// ErrExceeded matches every *Exceeded with errors.Is.
var ErrExceeded = errors.New("quota: exceeded")

// bucket is one token bucket; key is its map key, kept for eviction.
type bucket struct {
	key    string
	tokens float64
	last   time.Time
	limit  Limit
}

// at returns the tokens b holds at now.
func (b *bucket) at(now time.Time) float64 {
	el := now.Sub(b.last)
	if el <= 0 {
		return b.tokens
	}
	return min(float64(b.limit.Burst), b.tokens+float64(el)/float64(b.limit.Every))
}

// refill brings b up to now.
func (b *bucket) refill(now time.Time) {
	b.tokens = b.at(now)
	if now.After(b.last) {
		b.last = now
	}
}

// wait is how long until b holds one token.
func (b *bucket) wait() time.Duration {
	return time.Duration((1 - b.tokens) * float64(b.limit.Every))
}

// Limiter enforces the quotas. It is safe for concurrent use.
type Limiter struct {
	cfg      Config
	refusals *prometheus.CounterVec

	mu        sync.Mutex
	buckets   map[string]*list.Element // key -> element holding *bucket
	lru       *list.List               // front: most recently used
	lastSweep time.Time
}

// New returns a Limiter for cfg.
func New(cfg Config) (*Limiter, error) {
	if cfg.Node.Burst < 1 || cfg.Node.Every <= 0 {
		return nil, fmt.Errorf("quota: node quota %s: burst must be at least 1 and the refill interval positive", cfg.Node)
	}
	if cfg.IdentityPerTTL < 1 {
		return nil, fmt.Errorf("quota: identity quota of %d per TTL: must be at least 1", cfg.IdentityPerTTL)
	}
	if cfg.MaxBuckets == 0 {
		cfg.MaxBuckets = DefaultMaxBuckets
	}
	cfg.Clock = clock.OrSystem(cfg.Clock)
	l := &Limiter{cfg: cfg, buckets: map[string]*list.Element{}, lru: list.New(),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "castellan_quota_refusals_total",
			Help: "Certificate requests refused because a node or identity issuance quota was exhausted, by quota.",
		}, []string{"quota"})}
	for _, k := range []Kind{KindNode, KindIdentity} {
		l.refusals.WithLabelValues(string(k))
	}
	if cfg.Registry != nil {
		if err := cfg.Registry.Register(l.refusals); err != nil {
			return nil, fmt.Errorf("quota: register metrics: %w", err)
		}
	}
	return l, nil
}

// Identity names an identity on a node for Take: its SPIFFE ID and the
// registration entry (or pod UID) it is held for, if any.
func Identity(spiffeID, entry string) string {
	if entry == "" {
		return spiffeID
	}
	return spiffeID + " (entry " + entry + ")"
}

// Take takes one token from node's bucket and one from the bucket of
// identity (a SPIFFE ID and the entry or pod it is held for) on node,
// whose certificate will live ttl. It takes both or neither, and returns
// a *refusal.Error wrapping an *Exceeded naming the empty bucket. A request from no known node
// (node "", an Istio caller the CA cannot place) is limited per identity
// only: one shared bucket would let any such caller starve the others.
func (l *Limiter) Take(node, identity string, ttl time.Duration) error {
	now := l.cfg.Clock.Now()
	per := l.cfg.IdentityPerTTL
	idLimit := Limit{Burst: per, Every: max(ttl, MinTTL) / time.Duration(per)}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweep(now)
	nb := &bucket{tokens: 1} // no node: never empty, never kept
	if node != "" {
		nb = l.get("n\x00"+node, l.cfg.Node, now)
	}
	ib := l.get("i\x00"+node+"\x00"+identity, idLimit, now)
	var ex *Exceeded
	switch {
	case nb.tokens < 1:
		ex = &Exceeded{Kind: KindNode, Node: node, Limit: nb.limit, RetryAfter: nb.wait()}
	case ib.tokens < 1:
		ex = &Exceeded{Kind: KindIdentity, Node: node, Identity: identity, Limit: ib.limit, RetryAfter: ib.wait()}
	default:
		nb.tokens--
		ib.tokens--
		return nil
	}
	l.refusals.WithLabelValues(string(ex.Kind)).Inc()
	return ex.Refusal()
}

// get returns the bucket for key, refilled to now, creating a full one.
// The identity limit follows the latest TTL asked for.
func (l *Limiter) get(key string, lim Limit, now time.Time) *bucket {
	if el, ok := l.buckets[key]; ok {
		l.lru.MoveToFront(el)
		b := el.Value.(*bucket)
		b.refill(now)
		b.limit = lim
		b.tokens = min(b.tokens, float64(lim.Burst))
		return b
	}
	for len(l.buckets) >= l.cfg.MaxBuckets {
		oldest := l.lru.Back()
		delete(l.buckets, oldest.Value.(*bucket).key)
		l.lru.Remove(oldest)
	}
	b := &bucket{key: key, tokens: float64(lim.Burst), last: now, limit: lim}
	l.buckets[key] = l.lru.PushFront(b)
	return b
}

// sweep forgets full buckets, at most once per minute of the clock: a full
// bucket is the same as a new one. The least recently used come last, so
// the walk from the back stops at the first bucket used within a minute.
func (l *Limiter) sweep(now time.Time) {
	if now.Sub(l.lastSweep) < time.Minute {
		return
	}
	l.lastSweep = now
	for el := l.lru.Back(); el != nil; {
		prev := el.Prev()
		b := el.Value.(*bucket)
		if now.Sub(b.last) < time.Minute {
			break
		}
		if b.at(now) >= float64(b.limit.Burst) {
			delete(l.buckets, b.key)
			l.lru.Remove(el)
		}
		el = prev
	}
}

// Forgive refills (forgets) every identity bucket of spiffeID on node,
// whatever its entry: called when one of its certificates is revoked, so
// that the agent's replacement is not refused. The node's bucket is kept.
// It walks every bucket; revocations are rare.
func (l *Limiter) Forgive(node, spiffeID string) {
	prefix := "i\x00" + node + "\x00" + spiffeID
	l.mu.Lock()
	defer l.mu.Unlock()
	for key, el := range l.buckets {
		if key == prefix || strings.HasPrefix(key, prefix+" (entry ") {
			delete(l.buckets, key)
			l.lru.Remove(el)
		}
	}
}

// Len returns how many buckets are kept in memory.
func (l *Limiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}
