package authority

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/castellan-dev/castellan/ca/authority/keystore"
	"github.com/castellan-dev/castellan/ca/store"
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

// errNoChange rolls back a transaction that changed nothing, so that it
// neither writes nor signals other replicas.
var errNoChange = errors.New("authority: no change")

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

// change runs fn in an Update on the journal, writes the records fn
// changed, brings the roots' publication times up to date, reports every
// transition to the hook and, once committed, installs the new state
// (a.j.mu held). A refusal from fn, or from the hook, commits nothing.
func (a *Authority) change(ctx context.Context, fn func(*Txn) error) ([]Transition, error) {
	var done *Txn
	err := a.j.db.Update(ctx, func(tx store.Tx) error {
		recs, err := ReadRecords(tx)
		if err != nil {
			return err
		}
		t := &Txn{Tx: tx, Recs: recs, Now: a.clock(), Dirty: map[string]*Record{}}
		if err := fn(t); err != nil {
			return err
		}
		if len(t.Dirty) == 0 {
			return errNoChange
		}
		if err := a.commitTxn(ctx, t); err != nil {
			return err
		}
		done = t
		return nil
	})
	if errors.Is(err, errNoChange) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	a.j.metrics.Count(done.Changes)
	for _, c := range done.Changes {
		a.log.Info("authority transition", "authority", c.Authority.ID, "from", string(c.From), "to", string(c.To), "reason", c.Reason)
	}
	if err := a.install(done.Recs); err != nil {
		a.log.Error("installing the journal after a transition", "error", err.Error())
	}
	return done.Changes, nil
}

// commitTxn writes t's records and roots and calls the hook.
func (a *Authority) commitTxn(ctx context.Context, t *Txn) error {
	for _, r := range t.Dirty {
		if err := PutRecord(t.Tx, r); err != nil {
			return err
		}
	}
	if err := SyncRoots(t.Tx, t.Recs, t.Now); err != nil {
		return err
	}
	for i := range t.Changes {
		r, _ := t.Find(t.Changes[i].Authority.ID)
		t.Changes[i].Authority = a.info(t.Tx, r)
		if a.j.cfg.OnTransition == nil {
			continue
		}
		if err := a.j.cfg.OnTransition(ctx, t.Changes[i]); err != nil {
			return fmt.Errorf("authority: transition of %s to %s not made: recording it failed: %w", r.ID, t.Changes[i].To, err)
		}
	}
	return nil
}

// info describes r as of tx.
func (a *Authority) info(tx store.Tx, r *Record) Info {
	in := Info{
		ID: r.ID, State: r.State, Source: r.Source, Chain: r.Certs, Roots: r.RootCerts,
		PreparedAt: r.PreparedAt, ActivatedAt: r.ActivatedAt, DeactivatedAt: r.DeactivatedAt,
		TaintedAt: r.TaintedAt, RevokedAt: r.RevokedAt,
		LeavesExpireBy: LeavesExpireBy(r, a.j.schedule.MaxTTL),
	}
	if at, ok := PublishedAt(tx, r.RootCerts[0]); ok && r.State.Trusted() {
		in.RootPublishedAt = at
		in.ActivatableAt = at.Add(a.j.schedule.PublishDelay)
	}
	return in
}

// Authorities lists every authority of the journal, oldest first. Without
// a journal it returns nil.
func (a *Authority) Authorities(ctx context.Context) ([]Info, error) {
	if a.j == nil {
		return nil, nil
	}
	var out []Info
	err := a.j.db.View(ctx, func(tx store.Tx) error {
		recs, err := ReadRecords(tx)
		for _, r := range recs {
			out = append(out, a.info(tx, r))
		}
		return err
	})
	return out, err
}

// errNoJournal refuses transitions on a CA without journal.
var errNoJournal = Refuse("this CA has no authority journal: it was started without a store for it, so its authorities cannot change")

// Prepare creates the next managed authority in state prepared: a new
// intermediate under the active authority's root, or, with newRoot, under
// a new root. Its root is published at once; Activate accepts it once the
// root has been published for the publish delay (at once when the root is
// the active one's). Refused on a plug-in CA (rotate it by replacing its
// files) and while another authority is prepared.
func (a *Authority) Prepare(ctx context.Context, newRoot bool) (Info, error) {
	if a.j == nil {
		return Info{}, errNoJournal
	}
	a.j.mu.Lock()
	defer a.j.mu.Unlock()
	var id string
	_, err := a.change(ctx, func(t *Txn) error {
		r, err := a.prepareIn(t, newRoot, "operator: prepare")
		if r != nil {
			id = r.ID
		}
		return err
	})
	if err != nil {
		return Info{}, err
	}
	return a.infoOf(ctx, id)
}

func (a *Authority) infoOf(ctx context.Context, id string) (Info, error) {
	infos, err := a.Authorities(ctx)
	for _, in := range infos {
		if in.ID == id {
			return in, err
		}
	}
	return Info{}, err
}

// prepareIn is Prepare inside t.
func (a *Authority) prepareIn(t *Txn, newRoot bool, reason string) (*Record, error) {
	if a.j.plugin() {
		return nil, Refuse("this CA is plugged in from files: rotate it by replacing %s, %s and %s",
			a.j.cfg.RootCertFile, a.j.cfg.IntermediateCertFile, a.j.cfg.IntermediateKeyFile)
	}
	if p := FindState(t.Recs, StatePrepared); p != nil {
		return nil, Refuse("authority %s is already prepared (since %s): activate or revoke it before preparing another",
			p.ID, p.PreparedAt.UTC().Format(time.RFC3339))
	}
	cfg := a.j.cfg
	cfg.Clock = func() time.Time { return t.Now }
	var (
		ca  *keystore.CA
		err error
	)
	if newRoot {
		ca, err = keystore.Generate(storeConfig(cfg))
	} else {
		var root *keystore.CA
		if root, err = a.activeRoot(t); err == nil {
			ca, err = root.NewIntermediate(storeConfig(cfg))
		}
	}
	if err != nil {
		return nil, err
	}
	r, err := a.newManagedRecord(ca)
	if err != nil {
		return nil, err
	}
	t.Add(r, StatePrepared, reason)
	return r, nil
}

// activeRoot returns the root of the active managed authority with its
// key, as a CA that can issue intermediates.
func (a *Authority) activeRoot(t *Txn) (*keystore.CA, error) {
	active := FindState(t.Recs, StateActive)
	if active == nil || active.Source != SourceManaged {
		return nil, Refuse("there is no active managed authority whose root could sign a new intermediate: prepare one under a new root")
	}
	root := active.RootCerts[0]
	if !t.Now.Before(root.NotAfter) {
		return nil, Refuse("the root of the active authority %s expired at %s: prepare one under a new root", active.ID, root.NotAfter.UTC().Format(time.RFC3339))
	}
	if a.j.kek == nil {
		return nil, noKEK(active)
	}
	return a.j.kek.OpenRoot(active.ID, active.KEKID, active.SealedRootKey, root)
}

// Activate makes the prepared authority id the signer; the active one
// becomes old. Refused unless id is prepared, valid now, and its key opens
// on this replica; refused too, unless force, before its root has been in
// the bundle for the publish delay (peers that have not received the root
// yet would reject its leaves).
func (a *Authority) Activate(ctx context.Context, id string, force bool) (Info, error) {
	return a.transition(ctx, id, func(t *Txn) error { return a.activateIn(t, id, force, "operator: activate") })
}

func (a *Authority) activateIn(t *Txn, id string, force bool, reason string) error {
	r, err := t.Find(id)
	if err != nil {
		return err
	}
	if r.State != StatePrepared {
		return Refuse("authority %s is %s; only a prepared authority can be activated (prepare one first)", id, r.State)
	}
	if c := r.Certs[0]; t.Now.Before(c.NotBefore) || !t.Now.Before(c.NotAfter) {
		return Refuse("authority %s is not valid now (valid %s to %s)", id,
			c.NotBefore.UTC().Format(time.RFC3339), c.NotAfter.UTC().Format(time.RFC3339))
	}
	if err := a.checkPublished(t, r, force); err != nil {
		return err
	}
	if _, err := a.keyFor(r); err != nil {
		return Refuse("authority %s cannot sign on this replica: %v", id, err)
	}
	if cur := FindState(t.Recs, StateActive); cur != nil {
		t.Set(cur, StateOld, "superseded by "+id)
	}
	t.Set(r, StateActive, reason)
	return nil
}

// checkPublished refuses r unless its root has been published for the
// publish delay, or force.
func (a *Authority) checkPublished(t *Txn, r *Record, force bool) error {
	at, ok := PublishedAt(t.Tx, r.RootCerts[0])
	ready := at.Add(a.j.schedule.PublishDelay)
	if ok && !t.Now.Before(ready) || force {
		return nil
	}
	a.j.metrics.Refusals.WithLabelValues("root_not_published").Inc()
	if !ok {
		return Refuse("the root of authority %s (%s) is not in the trust bundle yet: peers would reject its leaves",
			r.ID, r.RootCerts[0].Subject)
	}
	return Refuse("the root of authority %s (%s) has been in the trust bundle for %s only, less than the publish delay %s: peers that have not received it yet would reject its leaves; activate it after %s, or force it",
		r.ID, r.RootCerts[0].Subject, t.Now.Sub(at).Round(time.Second), a.j.schedule.PublishDelay, ready.UTC().Format(time.RFC3339))
}

// Taint marks the old authority id tainted: it stays in the bundle, but
// every leaf under it must be replaced now. Refused for the active one
// (activate another first), a prepared one (it never signed: revoke it),
// and one already tainted or revoked.
func (a *Authority) Taint(ctx context.Context, id string) (Info, error) {
	return a.transition(ctx, id, func(t *Txn) error {
		r, err := t.Find(id)
		if err != nil {
			return err
		}
		switch r.State {
		case StateActive:
			return Refuse("authority %s is active: prepare and activate another authority first, then taint this one", id)
		case StatePrepared:
			return Refuse("authority %s is prepared and has never signed: revoke it instead", id)
		case StateTainted, StateRevoked:
			return Refuse("authority %s is already %s", id, r.State)
		}
		t.Set(r, StateTainted, "operator: taint")
		return nil
	})
}

// Revoke removes authority id from the bundle: leaves under it stop
// verifying. Refused for the active one and one already revoked; refused
// too, unless force, for one that may still have unexpired leaves.
func (a *Authority) Revoke(ctx context.Context, id string, force bool) (Info, error) {
	return a.transition(ctx, id, func(t *Txn) error { return a.revokeIn(t, id, force, "operator: revoke") })
}

func (a *Authority) revokeIn(t *Txn, id string, force bool, reason string) error {
	r, err := t.Find(id)
	if err != nil {
		return err
	}
	switch r.State {
	case StateActive:
		return Refuse("authority %s is active: prepare and activate another authority first", id)
	case StateRevoked:
		return Refuse("authority %s is already revoked", id)
	}
	if end := LeavesExpireBy(r, a.j.schedule.MaxTTL); t.Now.Before(end) && !force {
		return Refuse("authority %s may have signed leaves valid until %s: revoking it now breaks every workload still holding one; taint it so they are replaced, wait until then, or force it",
			id, end.UTC().Format(time.RFC3339))
	}
	t.Set(r, StateRevoked, reason)
	return nil
}

// transition runs an operator transition on id and returns its new state.
func (a *Authority) transition(ctx context.Context, id string, fn func(*Txn) error) (Info, error) {
	if a.j == nil {
		return Info{}, errNoJournal
	}
	a.j.mu.Lock()
	defer a.j.mu.Unlock()
	if _, err := a.change(ctx, fn); err != nil {
		return Info{}, err
	}
	return a.infoOf(ctx, id)
}
