package ledger

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/ca/ledger/reserve"
)

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
func (l *Ledger) Revoke(ctx context.Context, serial, reason string) (entry.Entry, error) {
	if l.readOnly {
		return entry.Entry{}, entry.ErrReadOnly
	}
	serial, err := entry.NormalizeSerial(serial)
	if err != nil {
		return entry.Entry{}, err
	}
	l.revokeMu.Lock()
	defer l.revokeMu.Unlock()
	cert, err := l.Get(ctx, serial)
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
	idx, err := l.Append(reserve.Use(ctx), ev)
	if err != nil {
		return entry.Entry{}, err
	}
	return l.Entry(ctx, idx[0])
}

// RevokedSerials returns the serials of certificates that are revoked and
// not yet expired at now, sorted. The CA pushes these to agents.
func (l *Ledger) RevokedSerials(now time.Time) []string {
	revs := l.Revocations(now)
	out := make([]string, len(revs))
	for i, r := range revs {
		out[i] = r.Serial
	}
	return out
}

// Revocations returns the revoked, unexpired certificates at now, sorted by
// serial.
func (l *Ledger) Revocations(now time.Time) []RevokedCert {
	l.mu.Lock()
	out := make([]RevokedCert, 0, len(l.revoked))
	for s, r := range l.revoked {
		if r.NotAfter.IsZero() || r.NotAfter.After(now) {
			out = append(out, RevokedCert{Serial: s, Time: r.Time, Reason: r.Reason, NotAfter: r.NotAfter, Index: r.Index})
		}
	}
	l.mu.Unlock()
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
func (l *Ledger) RevocationsChanged() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.revCh
}

// IsRevoked reports whether the certificate with the given serial (in the
// canonical form of serial.Number) has been revoked and has not yet expired at
// now. It reads an in-memory set and is cheap enough for every call.
func (l *Ledger) IsRevoked(serial string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	r, ok := l.revoked[serial]
	return ok && (r.NotAfter.IsZero() || r.NotAfter.After(now))
}
