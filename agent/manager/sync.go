package manager

import (
	"cmp"
	"context"
	"slices"
	"time"

	"github.com/castellan-dev/castellan/agent/cache"
	"github.com/castellan-dev/castellan/agent/state"
	"github.com/castellan-dev/castellan/agent/upstream"
	"github.com/castellan-dev/castellan/internal/serial"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
)

// sync follows the CA's state, reconnecting with backoff, and hands the
// latest state to the loop (an unread older state is replaced).
func (m *Manager) sync(ctx context.Context, out chan upstream.State) {
	attempt := 0
	for ctx.Err() == nil {
		received := m.follow(ctx, out)
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

// follow runs one CA.Sync until it ends; it reports whether it received
// anything.
func (m *Manager) follow(ctx context.Context, out chan upstream.State) bool {
	received := false
	err := m.cfg.CA.Sync(ctx, func(st upstream.State) {
		received = true
		m.caUp.Store(true)
		select { // keep only the newest state
		case <-out:
		default:
		}
		out <- st
	})
	if err != nil && ctx.Err() == nil {
		m.log.Debug("sync stream ended", "error", err.Error())
	}
	return received
}

// entries returns the CA's entries followed by those of the pod source
// whose IDs the CA's do not already use.
func (m *Manager) entries(st upstream.State) []upstream.Entry {
	if m.cfg.Pods == nil {
		return st.Entries
	}
	out := slices.Clone(st.Entries)
	used := make(map[string]bool, len(out))
	for _, e := range out {
		used[e.ID] = true
	}
	for _, e := range m.cfg.Pods.Entries() {
		if used[e.ID] {
			m.log.Error("pod entry has the ID of a CA entry; ignoring it", "entry_id", e.ID, "spiffe_id", e.SPIFFEID.String())
			continue
		}
		out = append(out, e)
	}
	return out
}

// apply reconciles the agent with the CA's state and the pod source:
// bundle, entries (add, change, remove), tainted authorities and revoked
// serials.
func (m *Manager) apply(st upstream.State) {
	changed := m.applyBundle(st.Bundle)
	want := make(map[string]upstream.Entry, len(st.Entries))
	for _, e := range m.entries(st) {
		want[e.ID] = e
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
	for _, e := range want {
		if m.applyEntry(e) {
			changed = true
		}
	}
	m.applyRevoked(st.Revoked)
	m.applyTaints(st.Tainted)
	if changed {
		m.publish()
	}
}

// applyRevoked marks every held SVID whose serial is revoked for
// re-issue at once.
func (m *Manager) applyRevoked(serials []serial.Number) {
	m.revoked = make(map[serial.Number]bool, len(serials))
	for _, n := range serials {
		m.revoked[n] = true
	}
	for key, id := range m.ids {
		if id.rec.SVID != nil && !id.revoked && m.revoked[id.serial] {
			m.log.Warn("SVID revoked; re-issuing at once", "entry_id", key, "serial", id.serial)
			id.revoked, id.reissue, id.retryAt, id.attempts = true, true, time.Time{}, 0
		}
	}
}

// applyBundle adopts b if it is a new bundle of the agent's trust domain;
// it reports whether it did.
func (m *Manager) applyBundle(b *x509bundle.Bundle) bool {
	if b == nil {
		return false
	}
	if b.TrustDomain() != m.cfg.TrustDomain {
		m.log.Error("ignoring trust bundle for another trust domain", "trust_domain", b.TrustDomain().String())
		return false
	}
	if m.bundle != nil && m.bundle.Equal(b) {
		return false
	}
	if err := m.cfg.Cache.SetBundle(b); err != nil {
		m.log.Error("could not cache the new trust bundle", "error", err.Error())
	}
	m.setBundle(b)
	m.log.Info("trust bundle updated", "roots", len(b.X509Authorities()))
	return true
}

// applyEntry adds or updates one entry; it reports whether what is served
// changed.
func (m *Manager) applyEntry(e upstream.Entry) bool {
	e.Selectors = sortedSelectors(e.Selectors)
	id, ok := m.ids[e.ID]
	if !ok {
		id = &identity{rec: cache.Record{EntryID: e.ID, Selectors: e.Selectors, TTL: e.TTL}, reissue: true, entry: e, known: true}
		m.ids[e.ID] = id
		m.warnAnyUser(id)
		m.log.Info("new entry; requesting an SVID", "entry_id", e.ID, "spiffe_id", e.SPIFFEID.String())
		return false
	}
	id.entry, id.known = e, true
	m.warnAnyUser(id)
	if id.rec.TTL != e.TTL || (id.rec.SVID != nil && id.rec.SVID.ID != e.SPIFFEID) {
		id.rec.TTL = e.TTL
		id.reissue = true
	}
	if slices.Equal(id.rec.Selectors, e.Selectors) {
		return false
	}
	id.rec.Selectors = e.Selectors
	if id.rec.SVID != nil {
		if err := m.cfg.Cache.Put(m.bundle, id.rec); err != nil {
			m.log.Error("could not cache changed selectors", "entry_id", e.ID, "error", err.Error())
		}
	}
	return true
}

// warnAnyUser logs, once per entry, that an entry lets any local user
// obtain its identity (the operator created it with --allow-any-user).
func (m *Manager) warnAnyUser(id *identity) {
	if !id.entry.AllowAnyUser || id.warnedAnyUser {
		return
	}
	id.warnedAnyUser = true
	m.log.Warn("entry lets ANY local user obtain its identity: it selects an executable but no unix:uid or unix:gid (created with --allow-any-user)",
		"entry_id", id.entry.ID, "spiffe_id", id.entry.SPIFFEID.String(), "selectors", id.entry.Selectors)
}

// sortedSelectors returns a sorted copy of sels, the order the cache and
// the comparison of an entry's selectors rely on.
func sortedSelectors(sels []state.Selector) []state.Selector {
	out := slices.Clone(sels)
	slices.SortFunc(out, func(a, b state.Selector) int {
		return cmp.Or(cmp.Compare(a.Type, b.Type), cmp.Compare(a.Value, b.Value))
	})
	return slices.Clip(out)
}
