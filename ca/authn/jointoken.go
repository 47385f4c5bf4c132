package authn

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/castellan-dev/castellan/ca/refusal"
	"github.com/castellan-dev/castellan/ca/store"
	"github.com/castellan-dev/castellan/internal/clock"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/peer"
)

// Join token limits.
const (
	// DefaultJoinTokenTTL is the lifetime of a token created with TTL 0.
	DefaultJoinTokenTTL = 10 * time.Minute
	// MaxJoinTokenTTL bounds how long a token may stay usable.
	MaxJoinTokenTTL = 7 * 24 * time.Hour
	// joinTokenBytes is the token's entropy: 256 random bits.
	joinTokenBytes = 32
	// joinTokenPrefix marks a Castellan join token, so a token pasted in
	// the wrong place is recognisable.
	joinTokenPrefix = "cjt_"
	// usedTokenRetention is how long a used or expired token's record is
	// kept (so a reuse is reported as such) before Prune removes it.
	usedTokenRetention = 24 * time.Hour
)

var joinTokenBucket = []byte("join_tokens")

// JoinTokens stores one-time join tokens in a store.DB (the registry
// keyspace). Only a SHA-256 of each token is stored, with the node it is
// for and its expiry; the token itself is shown once, by Create. Consume is
// one store Update, and the store serializes Updates across every replica
// sharing it: of two concurrent uses of the same token, through one
// replica or two, exactly one succeeds. A used token's hash is kept until a day
// after the token's expiry (Prune), so that a second use is recognised as
// one: it is refused, logged at warn level and counted as a possible theft
// (someone else read the token and raced the agent, or the agent lost its
// answer). JoinTokens is safe for concurrent use.
type JoinTokens struct {
	db     store.DB
	clock  clock.Clock
	log    *slog.Logger
	reuses prometheus.Counter
}

// JoinTokensConfig holds the settings of JoinTokens; its zero value is the
// default.
type JoinTokensConfig struct {
	// Clock dates tokens and their uses, and expires them (nil: the wall
	// clock).
	Clock clock.Clock
	// Logger receives a warning for each reuse of a spent token (nil:
	// discard).
	Logger *slog.Logger
	// Registry, if set, receives castellan_join_token_reuse_total (second
	// uses of a spent token).
	Registry prometheus.Registerer
}

// tokenRecord is the stored form of a join token.
type tokenRecord struct {
	Node      string    `json:"node"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
	UsedAt    time.Time `json:"used_at,omitzero"`
}

// TokenUse describes a successfully consumed join token.
type TokenUse struct {
	// Node is the node the token was created for.
	Node string
	// TokenID is a short, non-secret identifier of the token (a prefix of
	// its hash) for logs and the audit ledger.
	TokenID string
	// ExpiresAt is when the token would have expired.
	ExpiresAt time.Time
}

// NewJoinTokens returns a store over db, creating its bucket if needed
// (ctx bounds that).
func NewJoinTokens(ctx context.Context, db store.DB, cfg JoinTokensConfig) (*JoinTokens, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	j := &JoinTokens{db: db, clock: clock.OrSystem(cfg.Clock), log: cfg.Logger,
		reuses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "castellan_join_token_reuse_total",
			Help: "Attestations with a join token that was already used: a possible theft of the token.",
		})}
	if cfg.Registry != nil {
		cfg.Registry.MustRegister(j.reuses)
	}
	err := db.Update(ctx, func(tx store.Tx) error {
		_, err := tx.CreateBucketIfNotExists(joinTokenBucket)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("authn: create join token bucket: %w", err)
	}
	return j, nil
}

// Create makes a token that lets an agent on node attest once before ttl
// passes (0 means DefaultJoinTokenTTL). It returns the token and its expiry.
func (j *JoinTokens) Create(ctx context.Context, node string, ttl time.Duration) (string, time.Time, error) {
	if err := ValidateNodeName(node); err != nil {
		return "", time.Time{}, err
	}
	switch {
	case ttl == 0:
		ttl = DefaultJoinTokenTTL
	case ttl < 0:
		return "", time.Time{}, fmt.Errorf("authn: join token TTL %s is negative", ttl)
	case ttl > MaxJoinTokenTTL:
		return "", time.Time{}, fmt.Errorf("authn: join token TTL %s exceeds the maximum %s", ttl, MaxJoinTokenTTL)
	}
	if err := ctx.Err(); err != nil {
		return "", time.Time{}, fmt.Errorf("authn: create join token: %w", err)
	}
	raw := make([]byte, joinTokenBytes)
	if _, err := rand.Read(raw); err != nil {
		return "", time.Time{}, fmt.Errorf("authn: generate join token: %w", err)
	}
	token := joinTokenPrefix + base64.RawURLEncoding.EncodeToString(raw)
	now := j.clock.Now().UTC()
	rec := tokenRecord{Node: node, CreatedAt: now, ExpiresAt: now.Add(ttl)}
	val, err := json.Marshal(rec)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("authn: encode join token: %w", err)
	}
	key := tokenHash(token)
	err = j.db.Update(ctx, func(tx store.Tx) error {
		b, err := tokenBucket(tx)
		if err != nil {
			return err
		}
		return b.Put(key[:], val)
	})
	if err != nil {
		return "", time.Time{}, storeError("store join token", err)
	}
	return token, rec.ExpiresAt, nil
}

// Consume marks token used and returns the node it was created for. An
// unknown, already used or expired token gives an *refusal.Error (Unauthenticated)
// whose reason and message say which. When the store fails, the error
// wraps store.ErrUnavailable and no *refusal.Error (the refusal may rest on a
// failed read): the token was not spent, unless the error wraps
// store.ErrCommitUnknown.
func (j *JoinTokens) Consume(ctx context.Context, token string) (TokenUse, error) {
	if err := ctx.Err(); err != nil {
		return TokenUse{}, fmt.Errorf("authn: consume join token: %w", err)
	}
	if !strings.HasPrefix(token, joinTokenPrefix) ||
		len(token) != len(joinTokenPrefix)+base64.RawURLEncoding.EncodedLen(joinTokenBytes) {
		return TokenUse{}, Fail(ReasonJoinTokenMalformed,
			"join token is malformed; use the token printed by `castellanctl token create`")
	}
	key := tokenHash(token)
	id := hex.EncodeToString(key[:6])
	now := j.clock.Now().UTC()
	var (
		use    TokenUse
		reused *tokenRecord
	)
	err := j.db.Update(ctx, func(tx store.Tx) error {
		var err error
		use, reused, err = markUsed(tx, key[:], id, now)
		return err
	})
	if errors.Is(err, store.ErrUnavailable) {
		return TokenUse{}, storeError("consume join token "+id, err)
	}
	if reused != nil {
		j.reportReuse(ctx, id, reused)
	}
	if err != nil {
		var ae *refusal.Error
		if errors.As(err, &ae) {
			return TokenUse{}, ae
		}
		return TokenUse{}, fmt.Errorf("authn: consume join token: %w", err)
	}
	return use, nil
}

// markUsed marks the token stored under key used at now, in tx. A token
// already used is refused and returned as reused, so that the caller
// reports the reuse once the transaction is over.
func markUsed(tx store.Tx, key []byte, id string, now time.Time) (use TokenUse, reused *tokenRecord, err error) {
	b, err := tokenBucket(tx)
	if err != nil {
		return TokenUse{}, nil, err
	}
	val := b.Get(key)
	if val == nil {
		return TokenUse{}, nil, Fail(ReasonJoinTokenUnknown, "join token %s is unknown; create one with `castellanctl token create --node NAME`", id)
	}
	var rec tokenRecord
	if err := json.Unmarshal(val, &rec); err != nil {
		return TokenUse{}, nil, fmt.Errorf("authn: decode join token %s: %w", id, err)
	}
	if !rec.UsedAt.IsZero() {
		return TokenUse{}, &rec, Fail(ReasonJoinTokenUsed, "join token %s for node %q was already used at %s; join tokens are single-use, create a new one. "+
			"If this node's agent did not use it, the token was stolen: check the agent of node %q",
			id, rec.Node, rec.UsedAt.Format(time.RFC3339), rec.Node)
	}
	if !now.Before(rec.ExpiresAt) {
		return TokenUse{}, nil, Fail(ReasonJoinTokenExpired, "join token %s for node %q expired at %s; create a new one",
			id, rec.Node, rec.ExpiresAt.Format(time.RFC3339))
	}
	rec.UsedAt = now
	val, err = json.Marshal(rec)
	if err != nil {
		return TokenUse{}, nil, fmt.Errorf("authn: encode join token: %w", err)
	}
	return TokenUse{Node: rec.Node, TokenID: id, ExpiresAt: rec.ExpiresAt}, nil, b.Put(key, val)
}

// Prune deletes tokens that expired more than a day ago (used or not) and
// returns how many it deleted. Tokens younger than that are kept so that a
// late reuse is reported as a reuse rather than as an unknown token.
func (j *JoinTokens) Prune(ctx context.Context) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("authn: prune join tokens: %w", err)
	}
	cutoff := j.clock.Now().Add(-usedTokenRetention)
	n := 0
	err := j.db.Update(ctx, func(tx store.Tx) error {
		b, err := tokenBucket(tx)
		if err != nil {
			return err
		}
		var old [][]byte
		err = b.ForEach(func(k, v []byte) error {
			var rec tokenRecord
			if json.Unmarshal(v, &rec) != nil || !rec.ExpiresAt.After(cutoff) {
				old = append(old, slices.Clone(k))
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, k := range old {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		n = len(old)
		return nil
	})
	if err != nil {
		return 0, storeError("prune join tokens", err)
	}
	return n, nil
}

// reportReuse logs and counts a second use of a spent token. It never
// logs the token, only its ID (a prefix of its hash).
func (j *JoinTokens) reportReuse(ctx context.Context, id string, rec *tokenRecord) {
	j.reuses.Inc()
	from := "unknown"
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		from = p.Addr.String()
	}
	j.log.WarnContext(ctx, "join token used a second time: possible theft of the token; if the agent of this node did not join at first_used_at, treat the node's agent identity as compromised",
		"node", rec.Node, "token_id", id, "first_used_at", rec.UsedAt, "expires_at", rec.ExpiresAt, "peer", from)
}

// tokenBucket returns the join token bucket of tx (made by NewJoinTokens).
func tokenBucket(tx store.Tx) (store.Bucket, error) {
	if b := tx.Bucket(joinTokenBucket); b != nil {
		return b, nil
	}
	return nil, fmt.Errorf("authn: the store has no %s bucket", joinTokenBucket)
}

// storeError wraps the error of a store transaction. A store failure is
// reported as one (wrapping store.ErrUnavailable, or ErrCommitUnknown),
// without what the transaction decided on what may have been failed reads.
func storeError(op string, err error) error {
	switch {
	case errors.Is(err, store.ErrCommitUnknown):
		return fmt.Errorf("authn: %s: %w; the change may or may not have been made (%s)", op, store.ErrCommitUnknown, err.Error())
	case errors.Is(err, store.ErrUnavailable):
		return fmt.Errorf("authn: %s: %w; nothing was changed (%s)", op, store.ErrUnavailable, err.Error())
	}
	return fmt.Errorf("authn: %s: %w", op, err)
}

func tokenHash(token string) [32]byte { return sha256.Sum256([]byte(token)) }
