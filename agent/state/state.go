// Package state holds what a node agent serves: the identities it has
// obtained for the workloads on its node and the trust bundle, as immutable
// snapshots that the serving endpoints (SDS, Workload API) read and watch.
//
// The agent's manager is the only writer; endpoints are readers. A snapshot is
// never modified after it is published, so readers may keep and use one
// without locking.
package state

import (
	"slices"
	"strings"
	"sync"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// Selector is one attested property of a workload: Type "unix" with Value
// "uid:1000", "gid:1000", "path:/usr/bin/app" or "sha256:<hex>"; Type "k8s"
// with Value "ns:default", "sa:bookinfo-ratings", "pod-uid:<uid>".
type Selector struct {
	Type  string
	Value string
}

// String returns the selector as TYPE:VALUE.
func (s Selector) String() string { return s.Type + ":" + s.Value }

// Identity is one SVID that the agent serves to the workloads whose
// attested selectors include all of Selectors.
type Identity struct {
	// EntryID is the registration entry (or, on Kubernetes, the pod UID)
	// this identity was issued for.
	EntryID string
	// Selectors a caller must all present to receive this identity.
	Selectors []Selector
	// SVID holds the SPIFFE ID, the chain (leaf first) and the private key;
	// the key always matches the leaf.
	SVID *x509svid.SVID
}

// Matches reports whether a caller with the given attested selectors may
// receive this identity: every selector of the identity must be among them.
// An identity with no selectors matches nobody.
func (id Identity) Matches(caller []Selector) bool {
	if len(id.Selectors) == 0 {
		return false
	}
	for _, want := range id.Selectors {
		if !slices.Contains(caller, want) {
			return false
		}
	}
	return true
}

// Snapshot is the agent's complete serving state at one moment.
type Snapshot struct {
	// Revision increases by one on every published change.
	Revision uint64
	// Identities holds every identity the agent can serve, sorted by
	// SPIFFE ID then EntryID.
	Identities []Identity
	// Bundle is the trust bundle of the agent's trust domain; nil until the
	// agent has one.
	Bundle *x509bundle.Bundle
}

// For returns the identities a caller with the given selectors may receive,
// in snapshot order.
func (s *Snapshot) For(caller []Selector) []Identity {
	var out []Identity
	for _, id := range s.Identities {
		if id.Matches(caller) {
			out = append(out, id)
		}
	}
	return out
}

// Store publishes snapshots and wakes watchers on every change. The zero
// value is not usable; use NewStore. A Store is safe for concurrent use.
type Store struct {
	mu       sync.Mutex
	current  *Snapshot
	watchers map[chan struct{}]struct{}
}

// NewStore returns a store holding an empty snapshot at revision 0.
func NewStore() *Store {
	return &Store{current: &Snapshot{}, watchers: map[chan struct{}]struct{}{}}
}

// Current returns the latest snapshot. Callers must not modify it.
func (s *Store) Current() *Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.current
}

// Publish replaces the current snapshot with one holding identities and
// bundle, assigns it the next revision, and wakes every watcher. The store
// takes ownership of the slice.
func (s *Store) Publish(identities []Identity, bundle *x509bundle.Bundle) *Snapshot {
	slices.SortFunc(identities, func(a, b Identity) int {
		if c := strings.Compare(a.SVID.ID.String(), b.SVID.ID.String()); c != 0 {
			return c
		}
		return strings.Compare(a.EntryID, b.EntryID)
	})
	s.mu.Lock()
	defer s.mu.Unlock()
	s.current = &Snapshot{Revision: s.current.Revision + 1, Identities: identities, Bundle: bundle}
	for ch := range s.watchers {
		select {
		case ch <- struct{}{}:
		default: // a wake-up is already pending; the watcher reads Current.
		}
	}
	return s.current
}

// Watch returns a channel that receives a value after every Publish (wake-ups
// coalesce: a slow reader sees one signal for several publishes and should
// read Current), and a function that stops the watch.
func (s *Store) Watch() (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	s.mu.Lock()
	s.watchers[ch] = struct{}{}
	s.mu.Unlock()
	return ch, func() {
		s.mu.Lock()
		delete(s.watchers, ch)
		s.mu.Unlock()
	}
}
