package rotation

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/castellan-dev/castellan/ca/authority/internal/keystore"
	"github.com/castellan-dev/castellan/ca/authority/journal"
)

// startPlugin opens a plug-in CA with a journal: the files' authority is
// recorded (and made active on first start) before the CA serves.
func (j *Journal) startPlugin(ctx context.Context) error {
	cfg := j.cfg
	if cfg.KEKFile != "" { // opens managed authorities left from before the CA was plugged in
		if _, err := os.Stat(cfg.KEKFile); !errors.Is(err, fs.ErrNotExist) {
			if j.kek, err = keystore.LoadKEK(cfg.KEKFile, false); err != nil {
				return err
			}
		}
	}
	f, err := keystore.ReadPluginFiles(cfg.Store)
	if err != nil {
		return err
	}
	ca, err := keystore.ParsePluggedIn(cfg.Store, f)
	if err != nil {
		return err
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	applyErr := j.applyFiles(ctx, ca, true)
	if applyErr != nil && !errors.Is(applyErr, journal.ErrRefused) {
		return applyErr
	}
	j.files = f.Hash()
	if err := j.reload(ctx); err != nil {
		return errors.Join(applyErr, err)
	}
	return nil
}

// checkFiles applies the plug-in files if their content changed since they
// were last applied (j.mu held). Files that do not parse or check are
// refused once (until they change again): the current authority keeps
// signing.
func (j *Journal) checkFiles(ctx context.Context) error {
	f, err := keystore.ReadPluginFiles(j.cfg.Store)
	if err != nil {
		j.metrics.Refusals.WithLabelValues("unreadable_files").Inc()
		return fmt.Errorf("%w; the current authority keeps signing", err)
	}
	h := f.Hash()
	if h == j.files {
		return nil
	}
	ca, err := keystore.ParsePluggedIn(j.cfg.Store, f)
	if err != nil {
		j.files = h
		j.metrics.Refusals.WithLabelValues("invalid_files").Inc()
		return fmt.Errorf("%w; the plug-in CA files changed but are refused, the current authority keeps signing", err)
	}
	err = j.applyFiles(ctx, ca, false)
	if err == nil || errors.Is(err, journal.ErrRefused) {
		j.files = h
	}
	return err
}

// applyFiles records the plug-in authority ca in the journal (j.mu held).
// A new intermediate is recorded prepared, which publishes its roots, and
// activated at once if its root has been published for the publish delay;
// otherwise the activation is refused (the error says until when) and Tick
// activates it once the delay has passed, the current authority signing
// meanwhile. At start, when no other authority can sign on this replica,
// it is activated anyway, with an error logged. New roots beside an
// unchanged intermediate are added to the bundle.
func (j *Journal) applyFiles(ctx context.Context, ca *keystore.CA, start bool) error {
	id := journal.AuthorityID(ca.Cert)
	j.keys[id] = ca
	roots := rootsFirst(ca.Root, ca.Roots)
	var refusal error
	_, err := j.change(ctx, func(t *journal.Txn) error {
		refusal = nil
		if len(t.Recs) == 0 {
			t.Add(j.newPluginRecord(ca, roots), journal.StateActive, "bootstrap: plug-in CA files")
			return nil
		}
		r, err := j.pluginRecord(t, ca, roots)
		if err != nil || r.State == journal.StateActive {
			return err
		}
		at, ok := journal.PublishedAt(t.Tx, r.RootCerts[0])
		if !ok {
			at = t.Now // published by this transaction
		}
		ready := at.Add(j.schedule.PublishDelay)
		if !t.Now.Before(ready) {
			return j.switchTo(t, r, "plug-in CA files hold a new intermediate")
		}
		cur := journal.FindState(t.Recs, journal.StateActive)
		if cur == nil || start && !j.canSign(cur) {
			j.log.Error("activating the plug-in authority before its root was published for the publish delay: no other authority can sign on this replica",
				"authority", id, "root_published_at", at, "publish_delay", j.schedule.PublishDelay.String())
			return j.switchTo(t, r, "plug-in CA files at start; no other key available")
		}
		refusal = journal.Refuse("plug-in intermediate %s (%s) chains to root %q, which entered the trust bundle at %s: it may sign only once that root has been published for the publish delay %s, at %s (peers that have not received the root would reject its leaves); until then it is prepared, its roots are published, and authority %s keeps signing",
			id, ca.Cert.Subject, r.RootCerts[0].Subject, at.UTC().Format(time.RFC3339), j.schedule.PublishDelay, ready.UTC().Format(time.RFC3339), cur.ID)
		return nil
	})
	if err != nil {
		if errors.Is(err, journal.ErrRefused) {
			j.metrics.Refusals.WithLabelValues("refused_files").Inc()
		}
		return err
	}
	if refusal != nil {
		j.metrics.Refusals.WithLabelValues("root_not_published").Inc()
		j.log.Warn("plug-in CA files", "error", refusal.Error())
	}
	return refusal
}

// pluginRecord finds or adds the record of the files' authority and brings
// its roots up to date.
func (j *Journal) pluginRecord(t *journal.Txn, ca *keystore.CA, roots []*x509.Certificate) (*journal.Record, error) {
	id := journal.AuthorityID(ca.Cert)
	r, _ := t.Find(id)
	if r == nil {
		for _, p := range t.Recs {
			if p.State == journal.StatePrepared && p.Source == journal.SourcePlugin {
				t.Set(p, journal.StateRevoked, "superseded by newer plug-in files before it signed")
			}
		}
		r = j.newPluginRecord(ca, roots)
		t.Add(r, journal.StatePrepared, "plug-in CA files hold a new intermediate")
	}
	switch r.State {
	case journal.StateTainted, journal.StateRevoked:
		return nil, journal.Refuse("the plug-in CA files hold authority %s, which is %s: replace them with a new intermediate; the current authority keeps signing", id, r.State)
	case journal.StatePrepared, journal.StateOld:
		if !sameCerts(r.RootCerts, roots) {
			r.Roots, r.RootCerts = journal.DERs(roots), roots
			t.Dirty[r.ID] = r
		}
	case journal.StateActive:
		if !sameCerts(r.RootCerts, roots) {
			r.Roots, r.RootCerts = journal.DERs(roots), roots
			t.Set(r, journal.StateActive, "plug-in root file changed")
		}
	}
	return r, nil
}

// switchTo makes r (prepared, or old when the files were rolled back) the
// signer; the active authority becomes old.
func (j *Journal) switchTo(t *journal.Txn, r *journal.Record, reason string) error {
	if c := r.Certs[0]; !t.Now.Before(c.NotAfter) {
		return journal.Refuse("authority %s expired at %s", r.ID, c.NotAfter.UTC().Format(time.RFC3339))
	}
	if cur := journal.FindState(t.Recs, journal.StateActive); cur != nil {
		t.Set(cur, journal.StateOld, "superseded by "+r.ID)
	}
	t.Set(r, journal.StateActive, reason)
	return nil
}

func (j *Journal) newPluginRecord(ca *keystore.CA, roots []*x509.Certificate) *journal.Record {
	return &journal.Record{ID: journal.AuthorityID(ca.Cert), Source: journal.SourcePlugin, Chain: journal.DERs(ca.Chain), Roots: journal.DERs(roots),
		MaxTTL: journal.Duration(j.cfg.Store.MaxTTL), Certs: ca.Chain, RootCerts: roots}
}

// rootsFirst returns roots with root first, each once.
func rootsFirst(root *x509.Certificate, roots []*x509.Certificate) []*x509.Certificate {
	out := []*x509.Certificate{root}
	for _, r := range roots {
		if !r.Equal(root) {
			out = append(out, r)
		}
	}
	return out
}
