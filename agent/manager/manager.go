// Package manager is the node agent's control loop. It serves the cached
// SVIDs at once, follows the CA's SyncAgent stream (registration entries,
// trust bundle, revoked serials), obtains SVIDs for new entries, renews them
// when the rotate policy says so, and publishes what may be served to a
// state.Store — always after the cache holds it durably, never an expired
// SVID or one whose key does not match its leaf.
package manager

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/castellan-dev/castellan/agent/cache"
	"github.com/castellan-dev/castellan/agent/logcheck"
	"github.com/castellan-dev/castellan/agent/rotate"
	"github.com/castellan-dev/castellan/agent/state"
	cav1 "github.com/castellan-dev/castellan/api/castellan/ca/v1"
	"github.com/castellan-dev/castellan/internal/serial"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
)

// CA is what the manager needs from the CA; *client.Client implements it.
type CA interface {
	// BatchSign signs reqs in one call, results in request order.
	BatchSign(ctx context.Context, reqs []*cav1.SignX509SVIDRequest) ([]*cav1.BatchResult, error)
	// SyncAgent opens the stream of the agent's state.
	SyncAgent(ctx context.Context) (grpc.ServerStreamingClient[cav1.SyncAgentResponse], error)
}

// Config configures a Manager. CA, Cache and Store are required.
type Config struct {
	CA    CA
	Cache *cache.Cache
	Store *state.Store
	// TrustDomain of the agent; required.
	TrustDomain spiffeid.TrustDomain
	// Clock and Policy time rotations and retries; zero values mean the
	// wall clock and the default policy.
	Clock  rotate.Clock
	Policy rotate.Policy
	// OnBundle, if set, is called with every new trust bundle (the CA
	// client uses it to verify the CA).
	OnBundle func(*x509bundle.Bundle)
	// OnTaints, if set, is called with the signing certificates of the
	// tainted authorities whenever the CA sends some (the CA client
	// replaces the agent SVID if one of them signed it).
	OnTaints func([]*x509.Certificate)
	// Registry receives the manager's metrics; nil registers none.
	Registry *prometheus.Registry
	// Logger receives the manager's logs; nil discards them.
	Logger *slog.Logger
	// SignTimeout bounds one batch call; 0 means 30s.
	SignTimeout time.Duration
	// LogPolicy is --log-policy: under Enforce a new SVID is served only
	// once LogCheck proves it is in the witnessed issuance log; under
	// Monitor it is served and LogCheck alarms if it cannot prove it.
	LogPolicy logcheck.Mode
	// LogCheck is required unless LogPolicy is Off.
	LogCheck LogChecker
}

// Manager runs the agent's control loop. Create it with New and run it
// with Run; Ready may be called from any goroutine.
type Manager struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics

	caUp      atomic.Bool
	hasBundle atomic.Bool

	// Owned by the Run goroutine.
	ids     map[string]*identity
	bundle  *x509bundle.Bundle
	revoked map[serial.Number]bool
}

// identity is one registration entry and what the agent holds for it.
type identity struct {
	rec      cache.Record // rec.SVID is nil while the agent has nothing servable
	spiffeID string       // the entry's SPIFFE ID
	serial   serial.Number
	reissue  bool // renew at once: new entry, changed entry, or revoked SVID
	revoked  bool // the held SVID is revoked: drop it if no replacement comes
	attempts int
	retryAt  time.Time
	// warnedAnyUser: the entry's allow_any_user warning was logged.
	warnedAnyUser bool
}

// New returns a manager; it does nothing until Run.
func New(cfg Config) (*Manager, error) {
	if cfg.CA == nil || cfg.Cache == nil || cfg.Store == nil || cfg.TrustDomain.IsZero() {
		return nil, errors.New("manager: CA, Cache, Store and TrustDomain are required")
	}
	if cfg.LogPolicy != logcheck.Off && cfg.LogCheck == nil {
		return nil, fmt.Errorf("manager: --log-policy %s needs a log checker", cfg.LogPolicy)
	}
	if cfg.Clock == nil {
		cfg.Clock = rotate.System{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.SignTimeout <= 0 {
		cfg.SignTimeout = 30 * time.Second
	}
	m := &Manager{cfg: cfg, log: cfg.Logger, ids: map[string]*identity{}, revoked: map[serial.Number]bool{}}
	met, err := newMetrics(cfg.Registry, cfg.Clock)
	if err != nil {
		return nil, err
	}
	m.metrics = met
	return m, nil
}

// Ready reports nil when the agent can serve: it has a trust bundle and
// either reaches the CA or serves what it loaded from its cache.
func (m *Manager) Ready() error {
	if !m.hasBundle.Load() {
		return errors.New("manager: no trust bundle yet")
	}
	return nil
}

// CAReachable reports whether the sync stream with the CA is up.
func (m *Manager) CAReachable() bool { return m.caUp.Load() }

// Run serves the cache at once, then syncs with the CA and rotates SVIDs
// until ctx is done.
func (m *Manager) Run(ctx context.Context) error {
	if err := m.loadCache(); err != nil {
		return err
	}
	states := make(chan *cav1.AgentState, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		m.sync(ctx, states)
	}()
	defer wg.Wait()
	for {
		now := m.cfg.Clock.Now()
		m.expire(now)
		if due := m.due(now); len(due) > 0 {
			m.renew(ctx, due)
			continue
		}
		select {
		case <-ctx.Done():
			return nil
		case st := <-states:
			m.apply(st)
		case <-m.cfg.Clock.After(m.nextWake(now).Sub(now)):
		}
	}
}

// loadCache publishes every valid cached SVID before anything else.
func (m *Manager) loadCache() error {
	recs, bundle, err := m.cfg.Cache.Load(m.cfg.TrustDomain)
	if err != nil {
		return fmt.Errorf("manager: %w", err)
	}
	for _, r := range recs {
		m.ids[r.EntryID] = &identity{rec: r, serial: serialOf(r), spiffeID: r.SVID.ID.String()}
	}
	if bundle != nil {
		m.setBundle(bundle)
	}
	m.publish()
	m.log.Info("serving from cache", "identities", len(recs), "has_bundle", bundle != nil)
	return nil
}

func (m *Manager) setBundle(b *x509bundle.Bundle) {
	m.bundle = b
	m.hasBundle.Store(true)
	if m.cfg.OnBundle != nil {
		m.cfg.OnBundle(b)
	}
}

// publish hands every servable SVID to the store.
func (m *Manager) publish() {
	out := make([]state.Identity, 0, len(m.ids))
	var nearest time.Time
	for _, id := range m.ids {
		if id.rec.SVID == nil {
			continue
		}
		out = append(out, state.Identity{EntryID: id.rec.EntryID, Selectors: id.rec.Selectors, SVID: id.rec.SVID})
		if na := id.rec.NotAfter(); nearest.IsZero() || na.Before(nearest) {
			nearest = na
		}
	}
	m.metrics.cached.Set(float64(len(out)))
	m.metrics.setNearest(nearest)
	m.cfg.Store.Publish(out, m.bundle)
}

// expire stops serving SVIDs that have expired; their entries get new ones.
func (m *Manager) expire(now time.Time) {
	var gone []string
	for key, id := range m.ids {
		if id.rec.SVID != nil && !now.Before(id.rec.NotAfter()) {
			m.log.Warn("SVID expired before it could be renewed; no longer serving it",
				"entry_id", key, "spiffe_id", id.rec.SVID.ID.String(), "not_after", id.rec.NotAfter())
			id.rec.SVID = nil
			gone = append(gone, key)
		}
	}
	if len(gone) > 0 {
		m.dropCached(gone...)
		m.publish()
	}
}

// dropCached removes records; failure only leaves records that Load rejects.
func (m *Manager) dropCached(entryIDs ...string) {
	if err := m.cfg.Cache.Delete(entryIDs...); err != nil {
		m.log.Error("could not delete cached SVIDs", "entries", entryIDs, "error", err.Error())
	}
}

// due returns the entry IDs to send to the CA now, sorted.
func (m *Manager) due(now time.Time) []string {
	var out []string
	for key, id := range m.ids {
		if id.retryAt.After(now) {
			continue
		}
		if id.rec.SVID == nil || id.reissue || m.cfg.Policy.Due(now, id.rec.NextRotation) {
			out = append(out, key)
		}
	}
	slices.Sort(out)
	return out
}

// nextWake returns when the loop must next look at its identities.
func (m *Manager) nextWake(now time.Time) time.Time {
	next := now.Add(time.Hour)
	for _, id := range m.ids {
		at := id.retryAt
		if id.rec.SVID != nil && !id.reissue {
			at = latest(at, id.rec.NextRotation)
			if na := id.rec.NotAfter(); na.Before(at) {
				at = na
			}
		}
		if at.Before(next) {
			next = at
		}
	}
	return next
}

func latest(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
