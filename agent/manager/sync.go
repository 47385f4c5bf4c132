package manager

import (
	"context"
	"slices"
	"time"

	"github.com/castellan-dev/castellan/agent/cache"
	"github.com/castellan-dev/castellan/agent/client"
	"github.com/castellan-dev/castellan/agent/state"
	cav1 "github.com/castellan-dev/castellan/api/castellan/ca/v1"
	"github.com/castellan-dev/castellan/internal/serial"
)

// sync keeps a SyncAgent stream open, reconnecting with backoff, and hands
// the latest state to the loop (an unread older state is replaced).
func (m *Manager) sync(ctx context.Context, out chan *cav1.AgentState) {
	attempt := 0
	for ctx.Err() == nil {
		received := m.stream(ctx, out)
		m.caUp.Store(false)
		if ctx.Err() != nil {
			return
		}
		if received {
			attempt = 0
		}
		attempt++
		wait := m.cfg.Policy.Backoff(attempt, 0)
		m.log.Warn("CA sync stream down; serving what the agent holds and retrying", "retry_in", wait.String(), "attempt", attempt)
		select {
		case <-ctx.Done():
		case <-m.cfg.Clock.After(wait):
		}
	}
}

// stream reads one SyncAgent stream until it fails; it reports whether it
// received anything.
func (m *Manager) stream(ctx context.Context, out chan *cav1.AgentState) bool {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s, err := m.cfg.CA.SyncAgent(ctx)
	if err != nil {
		m.log.Debug("opening sync stream failed", "error", err.Error())
		return false
	}
	received := false
	for {
		resp, err := s.Recv()
		if err != nil {
			if ctx.Err() == nil {
				m.log.Debug("sync stream ended", "error", err.Error())
			}
			return received
		}
		received = true
		m.caUp.Store(true)
		select { // keep only the newest state
		case <-out:
		default:
		}
		out <- resp.GetState()
	}
}

// apply reconciles the agent with the CA's state: bundle, entries (add,
// change, remove), tainted authorities and revoked serials.
func (m *Manager) apply(st *cav1.AgentState) {
	changed := m.applyBundle(st.GetBundle())
	want := make(map[string]*cav1.Entry, len(st.GetEntries()))
	for _, e := range st.GetEntries() {
		want[e.GetId()] = e
	}
	var removed []string
	for key := range m.ids {
		if _, ok := want[key]; !ok {
			removed = append(removed, key)
		}
	}
	if len(removed) > 0 {
		for _, key := range removed {
			delete(m.ids, key)
		}
		m.dropCached(removed...)
		m.log.Info("entries removed; no longer serving them", "entries", removed)
		changed = true
	}
	for key, e := range want {
		if m.applyEntry(key, e) {
			changed = true
		}
	}
	m.revoked = make(map[serial.Number]bool, len(st.GetRevokedSerials()))
	for _, s := range st.GetRevokedSerials() {
		n, err := serial.Parse(s)
		if err != nil {
			m.log.Warn("CA pushed a revoked serial that is not a serial number; ignoring it", "serial", s, "error", err)
			continue
		}
		m.revoked[n] = true
	}
	m.applyTaints(st.GetTaintedAuthorities())
	for key, id := range m.ids {
		if id.rec.SVID != nil && !id.revoked && m.revoked[id.serial] {
			m.log.Warn("SVID revoked; re-issuing at once", "entry_id", key, "serial", id.serial)
			id.revoked, id.reissue, id.retryAt, id.attempts = true, true, time.Time{}, 0
		}
	}
	if changed {
		m.publish()
	}
}

func (m *Manager) applyBundle(b *cav1.Bundle) bool {
	if b == nil {
		return false
	}
	bundle, err := client.BundleFromProto(b)
	if err != nil {
		m.log.Error("ignoring unusable trust bundle from the CA", "error", err.Error())
		return false
	}
	if bundle.TrustDomain() != m.cfg.TrustDomain {
		m.log.Error("ignoring trust bundle for another trust domain", "trust_domain", bundle.TrustDomain().String())
		return false
	}
	if m.bundle != nil && m.bundle.Equal(bundle) {
		return false
	}
	if err := m.cfg.Cache.SetBundle(bundle); err != nil {
		m.log.Error("could not cache the new trust bundle", "error", err.Error())
	}
	m.setBundle(bundle)
	m.log.Info("trust bundle updated", "roots", len(bundle.X509Authorities()), "sequence", b.GetSequence())
	return true
}

// applyEntry adds or updates one entry; it reports whether what is served
// changed.
func (m *Manager) applyEntry(key string, e *cav1.Entry) bool {
	sels := selectors(e)
	ttl := time.Duration(e.GetTtlSeconds()) * time.Second
	id, ok := m.ids[key]
	if !ok {
		id = &identity{rec: cache.Record{EntryID: key, Selectors: sels, TTL: ttl}, reissue: true, spiffeID: e.GetSpiffeId()}
		m.ids[key] = id
		m.warnAnyUser(id, e)
		m.log.Info("new entry; requesting an SVID", "entry_id", key, "spiffe_id", e.GetSpiffeId())
		return false
	}
	m.warnAnyUser(id, e)
	id.spiffeID = e.GetSpiffeId()
	if id.rec.TTL != ttl || (id.rec.SVID != nil && id.rec.SVID.ID.String() != e.GetSpiffeId()) {
		id.rec.TTL = ttl
		id.reissue = true
	}
	if slices.Equal(id.rec.Selectors, sels) {
		return false
	}
	id.rec.Selectors = sels
	if id.rec.SVID != nil {
		if err := m.cfg.Cache.Put(m.bundle, id.rec); err != nil {
			m.log.Error("could not cache changed selectors", "entry_id", key, "error", err.Error())
		}
	}
	return true
}

// warnAnyUser logs, once per entry, that an entry lets any local user
// obtain its identity (the operator created it with --allow-any-user).
func (m *Manager) warnAnyUser(id *identity, e *cav1.Entry) {
	if !e.GetAllowAnyUser() || id.warnedAnyUser {
		return
	}
	id.warnedAnyUser = true
	m.log.Warn("entry lets ANY local user obtain its identity: it selects an executable but no unix:uid or unix:gid (created with --allow-any-user)",
		"entry_id", e.GetId(), "spiffe_id", e.GetSpiffeId(), "selectors", selectors(e))
}

func selectors(e *cav1.Entry) []state.Selector {
	out := make([]state.Selector, 0, len(e.GetSelectors()))
	for _, s := range e.GetSelectors() {
		out = append(out, state.Selector{Type: s.GetType(), Value: s.GetValue()})
	}
	slices.SortFunc(out, func(a, b state.Selector) int {
		if a.Type != b.Type {
			if a.Type < b.Type {
				return -1
			}
			return 1
		}
		if a.Value < b.Value {
			return -1
		}
		if a.Value > b.Value {
			return 1
		}
		return 0
	})
	return slices.Clip(out)
}
