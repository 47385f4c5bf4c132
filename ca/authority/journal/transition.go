package journal

import (
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/castellan-dev/castellan/ca/store"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Transition is one change of an authority's state, reported to
// Config.OnTransition before it commits. From is "" for a new authority;
// From == To (active) when a plug-in authority's published roots change.
type Transition struct {
	Authority Info // the authority after the transition
	From, To  State
	Reason    string
	At        time.Time
}

// Info describes an authority of the journal.
type Info struct {
	ID     string
	State  State
	Source Source
	// Chain is the signing certificate, then any further intermediates.
	Chain []*x509.Certificate
	// Roots are the roots it publishes; Roots[0] is the one Chain verifies to.
	Roots []*x509.Certificate
	// PreparedAt ... RevokedAt are the times of its transitions (zero if
	// it has not made them). DeactivatedAt is when it stopped signing.
	PreparedAt, ActivatedAt, DeactivatedAt, TaintedAt, RevokedAt time.Time
	// RootPublishedAt is when Roots[0] entered the bundle (zero if it is
	// not in it).
	RootPublishedAt time.Time
	// ActivatableAt is when Activate accepts it without force: its root
	// published for the publish delay (zero if its root is not published).
	ActivatableAt time.Time
	// LeavesExpireBy bounds the expiry of every leaf it may have signed
	// (zero if it never signed); Revoke refuses it before then.
	LeavesExpireBy time.Time
}

// Errors wrapped by TransitionError.
var (
	// ErrRefused: the transition is unsafe or makes no sense in the
	// authority's state.
	ErrRefused = errors.New("authority: transition refused")
	// ErrNotFound: no authority has that ID.
	ErrNotFound = errors.New("authority: no such authority")
)

// TransitionError is a refused transition. Its message says what was wrong
// and what to do; it maps to gRPC FailedPrecondition, or NotFound for an
// unknown ID.
type TransitionError struct {
	NotFound bool
	Msg      string
}

func Refuse(format string, args ...any) *TransitionError {
	return &TransitionError{Msg: fmt.Sprintf(format, args...)}
}

// Error implements error.
func (e *TransitionError) Error() string { return "authority: " + e.Msg }

// Is makes errors.Is match ErrRefused, or ErrNotFound for an unknown ID.
func (e *TransitionError) Is(target error) bool {
	return target == ErrRefused || (e.NotFound && target == ErrNotFound)
}

// GRPCStatus maps the refusal to FailedPrecondition or NotFound.
func (e *TransitionError) GRPCStatus() *status.Status {
	if e.NotFound {
		return status.New(codes.NotFound, e.Error())
	}
	return status.New(codes.FailedPrecondition, e.Error())
}

// txn is one transaction on the journal: the records read at its start,
// modified in place, and the transitions made.
type Txn struct {
	Tx      store.Tx
	Recs    []*Record
	Now     time.Time
	Changes []Transition
	Dirty   map[string]*Record
}

// Find returns the record id, or a NotFound refusal.
func (t *Txn) Find(id string) (*Record, error) {
	for _, r := range t.Recs {
		if r.ID == id {
			return r, nil
		}
	}
	return nil, &TransitionError{NotFound: true, Msg: fmt.Sprintf("no authority has ID %q (list them with castellanctl authority list)", id)}
}

// Add appends a new record in state to (prepared, or active for the
// first authority); its PreparedAt is now either way.
func (t *Txn) Add(r *Record, to State, reason string) {
	for _, o := range t.Recs {
		r.Seq = max(r.Seq, o.Seq)
	}
	r.Seq++
	t.Recs = append(t.Recs, r)
	r.State, r.PreparedAt = "", t.Now
	t.Set(r, to, reason)
}

// Set moves r to state to, stamping the time of the transition (not when
// it stays in its state: a plug-in authority's roots changed).
func (t *Txn) Set(r *Record, to State, reason string) {
	from := r.State
	r.State = to
	switch {
	case from == to:
	case to == StatePrepared:
		r.PreparedAt = t.Now
	case to == StateActive:
		r.ActivatedAt, r.DeactivatedAt = t.Now, time.Time{}
	case to == StateOld:
		r.DeactivatedAt = t.Now
	case to == StateTainted:
		r.TaintedAt = t.Now
	case to == StateRevoked:
		r.RevokedAt = t.Now
	}
	if from == StateActive && to != StateActive {
		r.DeactivatedAt = t.Now
	}
	t.Dirty[r.ID] = r
	t.Changes = append(t.Changes, Transition{From: from, To: to, Reason: reason, At: t.Now, Authority: Info{ID: r.ID}})
}
