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

func refuseTransition(format string, args ...any) *TransitionError {
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
type txn struct {
	tx      store.Tx
	recs    []*record
	now     time.Time
	changes []Transition
	dirty   map[string]*record
}

// errNoChange rolls back a transaction that changed nothing, so that it
// neither writes nor signals other replicas.
var errNoChange = errors.New("authority: no change")

// find returns the record id, or a NotFound refusal.
func (t *txn) find(id string) (*record, error) {
	for _, r := range t.recs {
		if r.ID == id {
			return r, nil
		}
	}
	return nil, &TransitionError{NotFound: true, Msg: fmt.Sprintf("no authority has ID %q (list them with castellanctl authority list)", id)}
}

// add appends a new record in state to (prepared, or active for the
// first authority); its PreparedAt is now either way.
func (t *txn) add(r *record, to State, reason string) {
	for _, o := range t.recs {
		r.Seq = max(r.Seq, o.Seq)
	}
	r.Seq++
	t.recs = append(t.recs, r)
	r.State, r.PreparedAt = "", t.now
	t.set(r, to, reason)
}

// set moves r to state to, stamping the time of the transition (not when
// it stays in its state: a plug-in authority's roots changed).
func (t *txn) set(r *record, to State, reason string) {
	from := r.State
	r.State = to
	switch {
	case from == to:
	case to == StatePrepared:
		r.PreparedAt = t.now
	case to == StateActive:
		r.ActivatedAt, r.DeactivatedAt = t.now, time.Time{}
	case to == StateOld:
		r.DeactivatedAt = t.now
	case to == StateTainted:
		r.TaintedAt = t.now
	case to == StateRevoked:
		r.RevokedAt = t.now
	}
	if from == StateActive && to != StateActive {
		r.DeactivatedAt = t.now
	}
	t.dirty[r.ID] = r
	t.changes = append(t.changes, Transition{From: from, To: to, Reason: reason, At: t.now, Authority: Info{ID: r.ID}})
}

// change runs fn in an Update on the journal, writes the records fn
// changed, brings the roots' publication times up to date, reports every
// transition to the hook and, once committed, installs the new state
// (a.j.mu held). A refusal from fn, or from the hook, commits nothing.
func (a *Authority) change(ctx context.Context, fn func(*txn) error) ([]Transition, error) {
	var done *txn
	err := a.j.db.Update(ctx, func(tx store.Tx) error {
		recs, err := readRecords(tx)
		if err != nil {
			return err
		}
		t := &txn{tx: tx, recs: recs, now: a.clock(), dirty: map[string]*record{}}
		if err := fn(t); err != nil {
			return err
		}
		if len(t.dirty) == 0 {
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
	a.j.metrics.count(done.changes)
	for _, c := range done.changes {
		a.log.Info("authority transition", "authority", c.Authority.ID, "from", string(c.From), "to", string(c.To), "reason", c.Reason)
	}
	if err := a.install(done.recs); err != nil {
		a.log.Error("installing the journal after a transition", "error", err.Error())
	}
	return done.changes, nil
}

// commitTxn writes t's records and roots and calls the hook.
func (a *Authority) commitTxn(ctx context.Context, t *txn) error {
	for _, r := range t.dirty {
		if err := putRecord(t.tx, r); err != nil {
			return err
		}
	}
	if err := syncRoots(t.tx, t.recs, t.now); err != nil {
		return err
	}
	for i := range t.changes {
		r, _ := t.find(t.changes[i].Authority.ID)
		t.changes[i].Authority = a.info(t.tx, r)
		if a.j.cfg.OnTransition == nil {
			continue
		}
		if err := a.j.cfg.OnTransition(ctx, t.changes[i]); err != nil {
			return fmt.Errorf("authority: transition of %s to %s not made: recording it failed: %w", r.ID, t.changes[i].To, err)
		}
	}
	return nil
}

// info describes r as of tx.
func (a *Authority) info(tx store.Tx, r *record) Info {
	in := Info{
		ID: r.ID, State: r.State, Source: r.Source, Chain: r.certs, Roots: r.roots,
		PreparedAt: r.PreparedAt, ActivatedAt: r.ActivatedAt, DeactivatedAt: r.DeactivatedAt,
		TaintedAt: r.TaintedAt, RevokedAt: r.RevokedAt,
		LeavesExpireBy: leavesExpireBy(r, a.j.schedule.maxTTL),
	}
	if at, ok := publishedAt(tx, r.roots[0]); ok && r.State.trusted() {
		in.RootPublishedAt = at
		in.ActivatableAt = at.Add(a.j.schedule.publishDelay)
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
		recs, err := readRecords(tx)
		for _, r := range recs {
			out = append(out, a.info(tx, r))
		}
		return err
	})
	return out, err
}

// errNoJournal refuses transitions on a CA without journal.
var errNoJournal = refuseTransition("this CA has no authority journal: it was started without a store for it, so its authorities cannot change")

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
	_, err := a.change(ctx, func(t *txn) error {
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
func (a *Authority) prepareIn(t *txn, newRoot bool, reason string) (*record, error) {
	if a.j.plugin() {
		return nil, refuseTransition("this CA is plugged in from files: rotate it by replacing %s, %s and %s",
			a.j.cfg.RootCertFile, a.j.cfg.IntermediateCertFile, a.j.cfg.IntermediateKeyFile)
	}
	if p := findState(t.recs, StatePrepared); p != nil {
		return nil, refuseTransition("authority %s is already prepared (since %s): activate or revoke it before preparing another",
			p.ID, p.PreparedAt.UTC().Format(time.RFC3339))
	}
	cfg := a.j.cfg
	cfg.Clock = func() time.Time { return t.now }
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
	t.add(r, StatePrepared, reason)
	return r, nil
}

// activeRoot returns the root of the active managed authority with its
// key, as a CA that can issue intermediates.
func (a *Authority) activeRoot(t *txn) (*keystore.CA, error) {
	active := findState(t.recs, StateActive)
	if active == nil || active.Source != SourceManaged {
		return nil, refuseTransition("there is no active managed authority whose root could sign a new intermediate: prepare one under a new root")
	}
	root := active.roots[0]
	if !t.now.Before(root.NotAfter) {
		return nil, refuseTransition("the root of the active authority %s expired at %s: prepare one under a new root", active.ID, root.NotAfter.UTC().Format(time.RFC3339))
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
	return a.transition(ctx, id, func(t *txn) error { return a.activateIn(t, id, force, "operator: activate") })
}

func (a *Authority) activateIn(t *txn, id string, force bool, reason string) error {
	r, err := t.find(id)
	if err != nil {
		return err
	}
	if r.State != StatePrepared {
		return refuseTransition("authority %s is %s; only a prepared authority can be activated (prepare one first)", id, r.State)
	}
	if c := r.certs[0]; t.now.Before(c.NotBefore) || !t.now.Before(c.NotAfter) {
		return refuseTransition("authority %s is not valid now (valid %s to %s)", id,
			c.NotBefore.UTC().Format(time.RFC3339), c.NotAfter.UTC().Format(time.RFC3339))
	}
	if err := a.checkPublished(t, r, force); err != nil {
		return err
	}
	if _, err := a.keyFor(r); err != nil {
		return refuseTransition("authority %s cannot sign on this replica: %v", id, err)
	}
	if cur := findState(t.recs, StateActive); cur != nil {
		t.set(cur, StateOld, "superseded by "+id)
	}
	t.set(r, StateActive, reason)
	return nil
}

// checkPublished refuses r unless its root has been published for the
// publish delay, or force.
func (a *Authority) checkPublished(t *txn, r *record, force bool) error {
	at, ok := publishedAt(t.tx, r.roots[0])
	ready := at.Add(a.j.schedule.publishDelay)
	if ok && !t.now.Before(ready) || force {
		return nil
	}
	a.j.metrics.refusals.WithLabelValues("root_not_published").Inc()
	if !ok {
		return refuseTransition("the root of authority %s (%s) is not in the trust bundle yet: peers would reject its leaves",
			r.ID, r.roots[0].Subject)
	}
	return refuseTransition("the root of authority %s (%s) has been in the trust bundle for %s only, less than the publish delay %s: peers that have not received it yet would reject its leaves; activate it after %s, or force it",
		r.ID, r.roots[0].Subject, t.now.Sub(at).Round(time.Second), a.j.schedule.publishDelay, ready.UTC().Format(time.RFC3339))
}

// Taint marks the old authority id tainted: it stays in the bundle, but
// every leaf under it must be replaced now. Refused for the active one
// (activate another first), a prepared one (it never signed: revoke it),
// and one already tainted or revoked.
func (a *Authority) Taint(ctx context.Context, id string) (Info, error) {
	return a.transition(ctx, id, func(t *txn) error {
		r, err := t.find(id)
		if err != nil {
			return err
		}
		switch r.State {
		case StateActive:
			return refuseTransition("authority %s is active: prepare and activate another authority first, then taint this one", id)
		case StatePrepared:
			return refuseTransition("authority %s is prepared and has never signed: revoke it instead", id)
		case StateTainted, StateRevoked:
			return refuseTransition("authority %s is already %s", id, r.State)
		}
		t.set(r, StateTainted, "operator: taint")
		return nil
	})
}

// Revoke removes authority id from the bundle: leaves under it stop
// verifying. Refused for the active one and one already revoked; refused
// too, unless force, for one that may still have unexpired leaves.
func (a *Authority) Revoke(ctx context.Context, id string, force bool) (Info, error) {
	return a.transition(ctx, id, func(t *txn) error { return a.revokeIn(t, id, force, "operator: revoke") })
}

func (a *Authority) revokeIn(t *txn, id string, force bool, reason string) error {
	r, err := t.find(id)
	if err != nil {
		return err
	}
	switch r.State {
	case StateActive:
		return refuseTransition("authority %s is active: prepare and activate another authority first", id)
	case StateRevoked:
		return refuseTransition("authority %s is already revoked", id)
	}
	if end := leavesExpireBy(r, a.j.schedule.maxTTL); t.now.Before(end) && !force {
		return refuseTransition("authority %s may have signed leaves valid until %s: revoking it now breaks every workload still holding one; taint it so they are replaced, wait until then, or force it",
			id, end.UTC().Format(time.RFC3339))
	}
	t.set(r, StateRevoked, reason)
	return nil
}

// transition runs an operator transition on id and returns its new state.
func (a *Authority) transition(ctx context.Context, id string, fn func(*txn) error) (Info, error) {
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
