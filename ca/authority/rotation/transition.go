package rotation

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/castellan-dev/castellan/internal/clock"

	"github.com/castellan-dev/castellan/ca/authority/internal/keystore"
	"github.com/castellan-dev/castellan/ca/authority/journal"
	"github.com/castellan-dev/castellan/ca/store"
)

// errNoChange rolls back a transaction that changed nothing, so that it
// neither writes nor signals other replicas.
var errNoChange = errors.New("authority: no change")

// change runs fn in an Update on the journal, writes the records fn
// changed, brings the roots' publication times up to date, reports every
// transition to the hook and, once committed, installs the new state
// (j.mu held). A refusal from fn, or from the hook, commits nothing.
func (j *Journal) change(ctx context.Context, fn func(*journal.Txn) error) ([]journal.Transition, error) {
	var done *journal.Txn
	err := j.db.Update(ctx, func(tx store.Tx) error {
		recs, err := journal.ReadRecords(tx)
		if err != nil {
			return err
		}
		t := &journal.Txn{Tx: tx, Recs: recs, Now: j.clock.Now(), Dirty: map[string]*journal.Record{}}
		if err := fn(t); err != nil {
			return err
		}
		if len(t.Dirty) == 0 {
			return errNoChange
		}
		if err := j.commitTxn(ctx, t); err != nil {
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
	j.metrics.Count(done.Changes)
	for _, c := range done.Changes {
		j.log.Info("authority transition", "authority", c.Authority.ID, "from", string(c.From), "to", string(c.To), "reason", c.Reason)
	}
	if err := j.install(done.Recs); err != nil {
		j.log.Error("installing the journal after a transition", "error", err.Error())
	}
	return done.Changes, nil
}

// commitTxn writes t's records and roots and calls the hook.
func (j *Journal) commitTxn(ctx context.Context, t *journal.Txn) error {
	for _, r := range t.Dirty {
		if err := journal.PutRecord(t.Tx, r); err != nil {
			return err
		}
	}
	if err := journal.SyncRoots(t.Tx, t.Recs, t.Now); err != nil {
		return err
	}
	for i := range t.Changes {
		r, _ := t.Find(t.Changes[i].Authority.ID)
		t.Changes[i].Authority = j.info(t.Tx, r)
		if j.cfg.OnTransition == nil {
			continue
		}
		if err := j.cfg.OnTransition(ctx, t.Changes[i]); err != nil {
			return fmt.Errorf("authority: transition of %s to %s not made: recording it failed: %w", r.ID, t.Changes[i].To, err)
		}
	}
	return nil
}

// info describes r as of tx.
func (j *Journal) info(tx store.Tx, r *journal.Record) journal.Info {
	in := journal.Info{
		ID: r.ID, State: r.State, Source: r.Source, Chain: r.Certs, Roots: r.RootCerts,
		PreparedAt: r.PreparedAt, ActivatedAt: r.ActivatedAt, DeactivatedAt: r.DeactivatedAt,
		TaintedAt: r.TaintedAt, RevokedAt: r.RevokedAt,
		LeavesExpireBy: journal.LeavesExpireBy(r, j.schedule.MaxTTL),
	}
	if at, ok := journal.PublishedAt(tx, r.RootCerts[0]); ok && r.State.Trusted() {
		in.RootPublishedAt = at
		in.ActivatableAt = at.Add(j.schedule.PublishDelay)
	}
	return in
}

// Authorities lists every authority of the journal, oldest first. Without
// a journal it returns nil.
func (j *Journal) Authorities(ctx context.Context) ([]journal.Info, error) {
	if j == nil {
		return nil, nil
	}
	var out []journal.Info
	err := j.db.View(ctx, func(tx store.Tx) error {
		recs, err := journal.ReadRecords(tx)
		for _, r := range recs {
			out = append(out, j.info(tx, r))
		}
		return err
	})
	return out, err
}

// errNoJournal refuses transitions on a CA without journal.
var errNoJournal = journal.Refuse("this CA has no authority journal: it was started without a store for it, so its authorities cannot change")

// Prepare creates the next managed authority in state prepared: a new
// intermediate under the active authority's root, or, with newRoot, under
// a new root. Its root is published at once; Activate accepts it once the
// root has been published for the publish delay (at once when the root is
// the active one's). Refused on a plug-in CA (rotate it by replacing its
// files) and while another authority is prepared.
func (j *Journal) Prepare(ctx context.Context, newRoot bool) (journal.Info, error) {
	if j == nil {
		return journal.Info{}, errNoJournal
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	var id string
	_, err := j.change(ctx, func(t *journal.Txn) error {
		r, err := j.prepareIn(t, newRoot, "operator: prepare")
		if r != nil {
			id = r.ID
		}
		return err
	})
	if err != nil {
		return journal.Info{}, err
	}
	return j.infoOf(ctx, id)
}

func (j *Journal) infoOf(ctx context.Context, id string) (journal.Info, error) {
	infos, err := j.Authorities(ctx)
	for _, in := range infos {
		if in.ID == id {
			return in, err
		}
	}
	return journal.Info{}, err
}

// prepareIn is Prepare inside t.
func (j *Journal) prepareIn(t *journal.Txn, newRoot bool, reason string) (*journal.Record, error) {
	if j.plugin() {
		return nil, journal.Refuse("this CA is plugged in from files: rotate it by replacing %s, %s and %s",
			j.cfg.Store.RootCertFile, j.cfg.Store.IntermediateCertFile, j.cfg.Store.IntermediateKeyFile)
	}
	if p := journal.FindState(t.Recs, journal.StatePrepared); p != nil {
		return nil, journal.Refuse("authority %s is already prepared (since %s): activate or revoke it before preparing another",
			p.ID, p.PreparedAt.UTC().Format(time.RFC3339))
	}
	cfg := j.cfg
	cfg.Store.Clock = clock.Frozen(t.Now)
	var (
		ca  *keystore.CA
		err error
	)
	if newRoot {
		ca, err = keystore.Generate(cfg.Store)
	} else {
		var root *keystore.CA
		if root, err = j.activeRoot(t); err == nil {
			ca, err = root.NewIntermediate(cfg.Store)
		}
	}
	if err != nil {
		return nil, err
	}
	r, err := j.newManagedRecord(ca)
	if err != nil {
		return nil, err
	}
	t.Add(r, journal.StatePrepared, reason)
	return r, nil
}

// activeRoot returns the root of the active managed authority with its
// key, as a CA that can issue intermediates.
func (j *Journal) activeRoot(t *journal.Txn) (*keystore.CA, error) {
	active := journal.FindState(t.Recs, journal.StateActive)
	if active == nil || active.Source != journal.SourceManaged {
		return nil, journal.Refuse("there is no active managed authority whose root could sign a new intermediate: prepare one under a new root")
	}
	root := active.RootCerts[0]
	if !t.Now.Before(root.NotAfter) {
		return nil, journal.Refuse("the root of the active authority %s expired at %s: prepare one under a new root", active.ID, root.NotAfter.UTC().Format(time.RFC3339))
	}
	if j.kek == nil {
		return nil, noKEK(active)
	}
	return j.kek.OpenRoot(active.ID, active.KEKID, active.SealedRootKey, root)
}

// Activate makes the prepared authority id the signer; the active one
// becomes old. Refused unless id is prepared, valid now, and its key opens
// on this replica; refused too, unless force, before its root has been in
// the bundle for the publish delay (peers that have not received the root
// yet would reject its leaves).
func (j *Journal) Activate(ctx context.Context, id string, force bool) (journal.Info, error) {
	return j.transition(ctx, id, func(t *journal.Txn) error { return j.activateIn(t, id, force, "operator: activate") })
}

func (j *Journal) activateIn(t *journal.Txn, id string, force bool, reason string) error {
	r, err := t.Find(id)
	if err != nil {
		return err
	}
	if r.State != journal.StatePrepared {
		return journal.Refuse("authority %s is %s; only a prepared authority can be activated (prepare one first)", id, r.State)
	}
	if c := r.Certs[0]; t.Now.Before(c.NotBefore) || !t.Now.Before(c.NotAfter) {
		return journal.Refuse("authority %s is not valid now (valid %s to %s)", id,
			c.NotBefore.UTC().Format(time.RFC3339), c.NotAfter.UTC().Format(time.RFC3339))
	}
	if err := j.checkPublished(t, r, force); err != nil {
		return err
	}
	if _, err := j.keyFor(r); err != nil {
		return journal.Refuse("authority %s cannot sign on this replica: %v", id, err)
	}
	if cur := journal.FindState(t.Recs, journal.StateActive); cur != nil {
		t.Set(cur, journal.StateOld, "superseded by "+id)
	}
	t.Set(r, journal.StateActive, reason)
	return nil
}

// checkPublished refuses r unless its root has been published for the
// publish delay, or force.
func (j *Journal) checkPublished(t *journal.Txn, r *journal.Record, force bool) error {
	at, ok := journal.PublishedAt(t.Tx, r.RootCerts[0])
	ready := at.Add(j.schedule.PublishDelay)
	if ok && !t.Now.Before(ready) || force {
		return nil
	}
	j.metrics.Refusals.WithLabelValues("root_not_published").Inc()
	if !ok {
		return journal.Refuse("the root of authority %s (%s) is not in the trust bundle yet: peers would reject its leaves",
			r.ID, r.RootCerts[0].Subject)
	}
	return journal.Refuse("the root of authority %s (%s) has been in the trust bundle for %s only, less than the publish delay %s: peers that have not received it yet would reject its leaves; activate it after %s, or force it",
		r.ID, r.RootCerts[0].Subject, t.Now.Sub(at).Round(time.Second), j.schedule.PublishDelay, ready.UTC().Format(time.RFC3339))
}

// Taint marks the old authority id tainted: it stays in the bundle, but
// every leaf under it must be replaced now. Refused for the active one
// (activate another first), a prepared one (it never signed: revoke it),
// and one already tainted or revoked.
func (j *Journal) Taint(ctx context.Context, id string) (journal.Info, error) {
	return j.transition(ctx, id, func(t *journal.Txn) error {
		r, err := t.Find(id)
		if err != nil {
			return err
		}
		switch r.State {
		case journal.StateActive:
			return journal.Refuse("authority %s is active: prepare and activate another authority first, then taint this one", id)
		case journal.StatePrepared:
			return journal.Refuse("authority %s is prepared and has never signed: revoke it instead", id)
		case journal.StateTainted, journal.StateRevoked:
			return journal.Refuse("authority %s is already %s", id, r.State)
		}
		t.Set(r, journal.StateTainted, "operator: taint")
		return nil
	})
}

// Revoke removes authority id from the bundle: leaves under it stop
// verifying. Refused for the active one and one already revoked; refused
// too, unless force, for one that may still have unexpired leaves.
func (j *Journal) Revoke(ctx context.Context, id string, force bool) (journal.Info, error) {
	return j.transition(ctx, id, func(t *journal.Txn) error { return j.revokeIn(t, id, force, "operator: revoke") })
}

func (j *Journal) revokeIn(t *journal.Txn, id string, force bool, reason string) error {
	r, err := t.Find(id)
	if err != nil {
		return err
	}
	switch r.State {
	case journal.StateActive:
		return journal.Refuse("authority %s is active: prepare and activate another authority first", id)
	case journal.StateRevoked:
		return journal.Refuse("authority %s is already revoked", id)
	}
	if end := journal.LeavesExpireBy(r, j.schedule.MaxTTL); t.Now.Before(end) && !force {
		return journal.Refuse("authority %s may have signed leaves valid until %s: revoking it now breaks every workload still holding one; taint it so they are replaced, wait until then, or force it",
			id, end.UTC().Format(time.RFC3339))
	}
	t.Set(r, journal.StateRevoked, reason)
	return nil
}

// transition runs an operator transition on id and returns its new state.
func (j *Journal) transition(ctx context.Context, id string, fn func(*journal.Txn) error) (journal.Info, error) {
	if j == nil {
		return journal.Info{}, errNoJournal
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if _, err := j.change(ctx, fn); err != nil {
		return journal.Info{}, err
	}
	return j.infoOf(ctx, id)
}
