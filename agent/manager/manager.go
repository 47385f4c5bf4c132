// Package manager is the node agent's control loop. It serves the cached
// SVIDs at once, follows the CA's state (registration entries, trust
// bundle, revoked serials, tainted authorities) and, on Kubernetes, the
// entries of the node's pods, obtains SVIDs for new entries, renews them
// when the rotate policy says so, and publishes what may be served to a
// state.Store — always after the cache holds it durably, never an expired
// SVID or one whose key does not match its leaf.
//
// The manager knows its collaborators only as Go values (package
// upstream): the CA is the CA interface (agent/client implements it over
// gRPC; tests use the real CA, agent/client/catest, or a fake), the pods
// an EntrySource (agent/podentries).
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
	"github.com/castellan-dev/castellan/agent/chaincheck"
	"github.com/castellan-dev/castellan/agent/logcheck"
	"github.com/castellan-dev/castellan/agent/rotate"
	"github.com/castellan-dev/castellan/agent/state"
	"github.com/castellan-dev/castellan/agent/upstream"
	"github.com/castellan-dev/castellan/internal/clock"
	"github.com/castellan-dev/castellan/internal/serial"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// CA is what the manager needs of the CA, in Go values; *client.Client
// implements it over gRPC.
type CA interface {
	// Sync follows the CA's view of the agent: it calls update with every
	// new State, in order and from one goroutine, until ctx ends or the
	// connection to the CA fails, and returns why it ended. update does
	// not block.
	Sync(ctx context.Context, update func(upstream.State)) error
	// Sign obtains a new SVID, with a fresh key, for each of entries in
	// one call; the results are in the order of entries. An error
	// wrapping upstream.ErrUnavailable means the CA could not be reached.
	Sign(ctx context.Context, entries []upstream.Entry) ([]upstream.Signed, error)
}

// EntrySource gives entries besides the CA's: on Kubernetes, one per pod
// of the node (*podentries.Source). Its entries are merged with the CA's
// once the CA's first state has arrived (until then the agent cannot tell
// which of its cached identities still have an entry).
type EntrySource interface {
	// Entries returns the source's current entries.
	Entries() []upstream.Entry
	// Watch returns a channel that receives a value after Entries changes
	// (wake-ups coalesce), and a function that stops the watch.
	Watch() (<-chan struct{}, func())
}

// Config configures a Manager. CA, Cache and Store are required.
type Config struct {
	CA    CA
	Cache *cache.Cache
	Store *state.Store
	// Pods, if set, adds the entries of the node's pods (agent/podentries)
	// to the CA's.
	Pods EntrySource
	// TrustDomain of the agent; required.
	TrustDomain spiffeid.TrustDomain
	// Clock and Policy time rotations and retries; zero values mean the
	// wall clock and the default policy.
	Clock  clock.Clock
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

	// chains verifies new SVIDs against bundle, remembering the
	// intermediates it verified (safe from any goroutine).
	chains chaincheck.Checker
}

// identity is one registration entry and what the agent holds for it.
type identity struct {
	rec      cache.Record // rec.SVID is nil while the agent has nothing servable
	entry    upstream.Entry
	known    bool // entry came from a source; false for an identity loaded from the cache until one confirms it
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
		cfg.Clock = clock.System{}
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
	states := make(chan upstream.State, 1)
	pods, stopPods := m.watchPods()
	defer stopPods()
	var last *upstream.State // the CA's latest state; nil until the first
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
			last = &st
			m.apply(st)
		case <-pods:
			if last != nil {
				m.apply(*last)
			}
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
		m.ids[r.EntryID] = &identity{rec: r, serial: serialOf(r), entry: upstream.Entry{ID: r.EntryID, SPIFFEID: r.SVID.ID}}
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

// watchPods watches the pod source, if any; without one the channel is
// nil and never ready.
func (m *Manager) watchPods() (<-chan struct{}, func()) {
	if m.cfg.Pods == nil {
		return nil, func() {}
	}
	return m.cfg.Pods.Watch()
}

// due returns the entry IDs to send to the CA now, sorted.
func (m *Manager) due(now time.Time) []string {
	var out []string
	for key, id := range m.ids {
		if id.retryAt.After(now) {
			continue
		}
		if !id.known {
			continue // its entry may be gone, or be a pod's: wait for the sources
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
		if !id.known {
			at = next // only its expiry matters until a source confirms it
		}
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
