package authority

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/castellan-dev/castellan/ca/authority/keystore"
)

// startPlugin opens a plug-in CA with a journal: the files' authority is
// recorded (and made active on first start) before the CA serves.
func (a *Authority) startPlugin(ctx context.Context) error {
	cfg := a.j.cfg
	if cfg.KEKFile != "" { // opens managed authorities left from before the CA was plugged in
		if _, err := os.Stat(cfg.KEKFile); !errors.Is(err, fs.ErrNotExist) {
			if a.j.kek, err = keystore.LoadKEK(cfg.KEKFile, false); err != nil {
				return err
			}
		}
	}
	f, err := keystore.ReadPluginFiles(storeConfig(cfg))
	if err != nil {
		return err
	}
	ca, err := keystore.ParsePluggedIn(storeConfig(cfg), f)
	if err != nil {
		return err
	}
	a.j.mu.Lock()
	defer a.j.mu.Unlock()
	applyErr := a.applyFiles(ctx, ca, true)
	if applyErr != nil && !errors.Is(applyErr, ErrRefused) {
		return applyErr
	}
	a.j.files = f.Hash()
	if err := a.reload(ctx); err != nil {
		return errors.Join(applyErr, err)
	}
	return nil
}

// checkFiles applies the plug-in files if their content changed since they
// were last applied (a.j.mu held). Files that do not parse or check are
// refused once (until they change again): the current authority keeps
// signing.
func (a *Authority) checkFiles(ctx context.Context) error {
	f, err := keystore.ReadPluginFiles(storeConfig(a.j.cfg))
	if err != nil {
		a.j.metrics.Refusals.WithLabelValues("unreadable_files").Inc()
		return fmt.Errorf("%w; the current authority keeps signing", err)
	}
	h := f.Hash()
	if h == a.j.files {
		return nil
	}
	ca, err := keystore.ParsePluggedIn(storeConfig(a.j.cfg), f)
	if err != nil {
		a.j.files = h
		a.j.metrics.Refusals.WithLabelValues("invalid_files").Inc()
		return fmt.Errorf("%w; the plug-in CA files changed but are refused, the current authority keeps signing", err)
	}
	err = a.applyFiles(ctx, ca, false)
	if err == nil || errors.Is(err, ErrRefused) {
		a.j.files = h
	}
	return err
}

// applyFiles records the plug-in authority ca in the journal (a.j.mu held).
// A new intermediate is recorded prepared, which publishes its roots, and
// activated at once if its root has been published for the publish delay;
// otherwise the activation is refused (the error says until when) and Tick
// activates it once the delay has passed, the current authority signing
// meanwhile. At start, when no other authority can sign on this replica,
// it is activated anyway, with an error logged. New roots beside an
// unchanged intermediate are added to the bundle.
func (a *Authority) applyFiles(ctx context.Context, ca *keystore.CA, start bool) error {
	id := AuthorityID(ca.Cert)
	a.j.keys[id] = ca
	roots := rootsFirst(ca.Root, ca.Roots)
	var refusal error
	_, err := a.change(ctx, func(t *Txn) error {
		refusal = nil
		if len(t.Recs) == 0 {
			t.Add(a.newPluginRecord(ca, roots), StateActive, "bootstrap: plug-in CA files")
			return nil
		}
		r, err := a.pluginRecord(t, ca, roots)
		if err != nil || r.State == StateActive {
			return err
		}
		at, ok := PublishedAt(t.Tx, r.RootCerts[0])
		if !ok {
			at = t.Now // published by this transaction
		}
		ready := at.Add(a.j.schedule.PublishDelay)
		if !t.Now.Before(ready) {
			return a.switchTo(t, r, "plug-in CA files hold a new intermediate")
		}
		cur := FindState(t.Recs, StateActive)
		if cur == nil || start && !a.canSign(cur) {
			a.log.Error("activating the plug-in authority before its root was published for the publish delay: no other authority can sign on this replica",
				"authority", id, "root_published_at", at, "publish_delay", a.j.schedule.PublishDelay.String())
			return a.switchTo(t, r, "plug-in CA files at start; no other key available")
		}
		refusal = Refuse("plug-in intermediate %s (%s) chains to root %q, which entered the trust bundle at %s: it may sign only once that root has been published for the publish delay %s, at %s (peers that have not received the root would reject its leaves); until then it is prepared, its roots are published, and authority %s keeps signing",
			id, ca.Cert.Subject, r.RootCerts[0].Subject, at.UTC().Format(time.RFC3339), a.j.schedule.PublishDelay, ready.UTC().Format(time.RFC3339), cur.ID)
		return nil
	})
	if err != nil {
		if errors.Is(err, ErrRefused) {
			a.j.metrics.Refusals.WithLabelValues("refused_files").Inc()
		}
		return err
	}
	if refusal != nil {
		a.j.metrics.Refusals.WithLabelValues("root_not_published").Inc()
		a.log.Warn("plug-in CA files", "error", refusal.Error())
	}
	return refusal
}

// pluginRecord finds or adds the record of the files' authority and brings
// its roots up to date.
func (a *Authority) pluginRecord(t *Txn, ca *keystore.CA, roots []*x509.Certificate) (*Record, error) {
	id := AuthorityID(ca.Cert)
	r, _ := t.Find(id)
	if r == nil {
		for _, p := range t.Recs {
			if p.State == StatePrepared && p.Source == SourcePlugin {
				t.Set(p, StateRevoked, "superseded by newer plug-in files before it signed")
			}
		}
		r = a.newPluginRecord(ca, roots)
		t.Add(r, StatePrepared, "plug-in CA files hold a new intermediate")
	}
	switch r.State {
	case StateTainted, StateRevoked:
		return nil, Refuse("the plug-in CA files hold authority %s, which is %s: replace them with a new intermediate; the current authority keeps signing", id, r.State)
	case StatePrepared, StateOld:
		if !sameCerts(r.RootCerts, roots) {
			r.Roots, r.RootCerts = DERs(roots), roots
			t.Dirty[r.ID] = r
		}
	case StateActive:
		if !sameCerts(r.RootCerts, roots) {
			r.Roots, r.RootCerts = DERs(roots), roots
			t.Set(r, StateActive, "plug-in root file changed")
		}
	}
	return r, nil
}

// switchTo makes r (prepared, or old when the files were rolled back) the
// signer; the active authority becomes old.
func (a *Authority) switchTo(t *Txn, r *Record, reason string) error {
	if c := r.Certs[0]; !t.Now.Before(c.NotAfter) {
		return Refuse("authority %s expired at %s", r.ID, c.NotAfter.UTC().Format(time.RFC3339))
	}
	if cur := FindState(t.Recs, StateActive); cur != nil {
		t.Set(cur, StateOld, "superseded by "+r.ID)
	}
	t.Set(r, StateActive, reason)
	return nil
}

func (a *Authority) newPluginRecord(ca *keystore.CA, roots []*x509.Certificate) *Record {
	return &Record{ID: AuthorityID(ca.Cert), Source: SourcePlugin, Chain: DERs(ca.Chain), Roots: DERs(roots),
		MaxTTL: Duration(a.life.Max()), Certs: ca.Chain, RootCerts: roots}
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
