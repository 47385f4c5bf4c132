// Package revocation is the ledger's revocations: the set of revoked,
// unexpired certificates (loaded from the index, kept up to date with
// every committed revocation, read on every call), the signal of its
// changes, and Revoke, which records one.
package revocation

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/castellan-dev/castellan/internal/clock"

	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/ca/ledger/index"
	"github.com/castellan-dev/castellan/ca/ledger/reserve"
	"github.com/castellan-dev/castellan/ca/store"
)

// ErrAlreadyRevoked: Revoke of a serial that is already revoked.
var ErrAlreadyRevoked = errors.New("ledger: certificate already revoked")

// Set is the revocations of a ledger. The functions that keep it up to
// date (Load, Apply, Forget) are functions, not methods, so that they are
// not promoted to the Ledger that embeds the Set.
type Set struct {
	idx      *index.Index
	append   func(context.Context, ...entry.Event) ([]uint64, error)
	readOnly bool
	revokeMu *sync.Mutex // serializes the ledger's revocations

	mu      sync.Mutex
	revoked map[string]index.Revoked // serial -> revocation, unexpired only
	ch      chan struct{}            // closed when revoked changes
}

// New returns the empty revocations of a ledger whose index is idx and
// whose appends go through appendFn; revokeMu serializes every write
// that revokes (Revoke, bans, lineages). readOnly: forensic mode.
func New(idx *index.Index, appendFn func(context.Context, ...entry.Event) ([]uint64, error), revokeMu *sync.Mutex, readOnly bool) *Set {
	return &Set{idx: idx, append: appendFn, revokeMu: revokeMu, readOnly: readOnly,
		revoked: map[string]index.Revoked{}, ch: make(chan struct{})}
}

// Load replaces the revocations in memory with those stored in tx.
func Load(s *Set, tx store.Tx) error {
	revoked := map[string]index.Revoked{}
	if err := index.ForEachRevoked(tx, func(serial string, r index.Revoked) error {
		revoked[serial] = r
		return nil
	}); err != nil {
		return err
	}
	s.mu.Lock()
	s.revoked = revoked
	s.mu.Unlock()
	return nil
}

// Apply adds the revocations among the committed events evs (evs[0] at
// index first) and wakes the waiters if there was one.
func Apply(s *Set, first uint64, evs []entry.Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	changed := false
	for i := range evs {
		if ev := &evs[i]; ev.Kind == entry.KindRevocation {
			s.revoked[ev.Serial] = index.Revoked{Index: first + uint64(i), Time: ev.Time, Reason: ev.Reason, NotAfter: ev.NotAfter}
			changed = true
		}
	}
	if changed {
		close(s.ch)
		s.ch = make(chan struct{})
	}
}

// Forget drops from memory the revocations of certificates that expired
// before cutoff: those Prune removed, and those another replica's Prune
// removed from a shared store.
func Forget(s *Set, cutoff time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(s.revoked)
	for serial, r := range s.revoked {
		if !r.NotAfter.IsZero() && r.NotAfter.Before(cutoff) {
			delete(s.revoked, serial)
		}
	}
	if len(s.revoked) != n {
		close(s.ch)
		s.ch = make(chan struct{})
	}
}

// Revoker is how the parts of a ledger that revoke certificates (bans,
// lineages) read and write it.
type Revoker struct {
	// Index is the ledger's certificate index; Revocations its
	// revocations in force.
	Index       *index.Index
	Revocations *Set
	// Append appends events to the log (Ledger.Append).
	Append func(context.Context, ...entry.Event) ([]uint64, error)
	// Mu serializes every write that revokes (Revoke, bans, lineages).
	Mu *sync.Mutex
	// Clock is the ledger's clock.
	Clock clock.Clock
}

// RevokedCert is a revoked certificate that has not yet expired.
type RevokedCert struct {
	Serial   string
	Time     time.Time // when it was revoked
	Reason   string
	NotAfter time.Time
	Index    uint64 // the revocation event's position in the log
}

// Revoke records the revocation of the certificate with the given serial
// (hex, any case) and returns the revocation entry. It returns ErrNotFound
// when no issuance or renewal with that serial is in the log, and
// ErrAlreadyRevoked when it was revoked before.
func (s *Set) Revoke(ctx context.Context, serial, reason string) (entry.Entry, error) {
	if s.readOnly {
		return entry.Entry{}, entry.ErrReadOnly
	}
	serial, err := entry.NormalizeSerial(serial)
	if err != nil {
		return entry.Entry{}, err
	}
	s.revokeMu.Lock()
	defer s.revokeMu.Unlock()
	cert, err := s.idx.Get(ctx, serial)
	if err != nil {
		return entry.Entry{}, err
	}
	if cert.Revoked != nil {
		return entry.Entry{}, fmt.Errorf("%w: serial %s at entry %d", ErrAlreadyRevoked, serial, cert.Revoked.Index)
	}
	ev := entry.Event{
		Kind: entry.KindRevocation, Serial: serial, SPIFFEID: cert.SPIFFEID, Node: cert.Node,
		NotAfter: cert.NotAfter, Reason: reason,
	}
	// A revocation may use the disk reserve: an operator must be able to
	// cut off a certificate while issuance is stopped for lack of space.
	idx, err := s.append(reserve.Use(ctx), ev)
	if err != nil {
		return entry.Entry{}, err
	}
	return s.idx.Entry(ctx, idx[0])
}

// RevokedSerials returns the serials of certificates that are revoked and
// not yet expired at now, sorted. The CA pushes these to agents.
func (s *Set) RevokedSerials(now time.Time) []string {
	revs := s.Revocations(now)
	out := make([]string, len(revs))
	for i, r := range revs {
		out[i] = r.Serial
	}
	return out
}

// Revocations returns the revoked, unexpired certificates at now, sorted by
// serial.
func (s *Set) Revocations(now time.Time) []RevokedCert {
	s.mu.Lock()
	out := make([]RevokedCert, 0, len(s.revoked))
	for serial, r := range s.revoked {
		if r.NotAfter.IsZero() || r.NotAfter.After(now) {
			out = append(out, RevokedCert{Serial: serial, Time: r.Time, Reason: r.Reason, NotAfter: r.NotAfter, Index: r.Index})
		}
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Serial < out[j].Serial })
	return out
}

// RevocationsChanged returns a channel that is closed the next time a
// revocation is committed to the log. Callers wait on it, then call
// RevokedSerials and RevocationsChanged again:
//
//	for {
//		ch := l.RevocationsChanged()
//		push(l.RevokedSerials(now()))
//		select { case <-ch: case <-ctx.Done(): return }
//	}
//
// Taking the channel before reading the set means no change is missed.
func (s *Set) RevocationsChanged() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ch
}

// IsRevoked reports whether the certificate with the given serial (in the
// canonical form of serial.Number) has been revoked and has not yet expired at
// now. It reads an in-memory set and is cheap enough for every call.
func (s *Set) IsRevoked(serial string, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.revoked[serial]
	return ok && (r.NotAfter.IsZero() || r.NotAfter.After(now))
}
