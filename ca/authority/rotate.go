package authority

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/castellan-dev/castellan/ca/authority/keystore"
	"github.com/castellan-dev/castellan/ca/store"
)

// KEKName is the default key-encryption key file inside Config.DataDir.
const KEKName = "authority.kek"

// journal is the part of an Authority kept in a journal.
type journal struct {
	db       store.DB
	cfg      Config
	schedule Schedule
	metrics  *Metrics

	// mu serializes every read-and-install and every transition of this
	// process, so that an older view of the journal is never installed
	// over a newer one.
	mu    sync.Mutex
	kek   *keystore.KEK           // nil: no managed authority can be opened
	keys  map[string]*keystore.CA // opened signing keys by authority ID
	files [32]byte                // hash of the plug-in files last applied
}

func (j *journal) plugin() bool { return j.cfg.RootCertFile != "" }

// openJournal opens the CA from cfg.Journal, bootstrapping it on first
// start.
func (a *Authority) openJournal(ctx context.Context, cfg Config) error {
	m, err := NewMetrics(cfg.Registry)
	if err != nil {
		return err
	}
	a.j = &journal{
		db: cfg.Journal, cfg: cfg, metrics: m, keys: map[string]*keystore.CA{},
		schedule: Schedule{PrepareAt: cfg.PrepareAt, PublishDelay: cfg.PublishDelay,
			IntermediateTTL: cfg.IntermediateTTL, MaxTTL: cfg.MaxTTL},
	}
	if a.j.plugin() {
		return a.startPlugin(ctx)
	}
	if cfg.KEKFile == "" {
		return errors.New("authority: a journal needs a key-encryption key: set the KEK file or the data dir")
	}
	var recs []*Record
	if err := cfg.Journal.View(ctx, func(tx store.Tx) error {
		recs, err = ReadRecords(tx)
		return err
	}); err != nil {
		return fmt.Errorf("authority: read journal: %w", err)
	}
	// A KEK is generated only for a new, unshared journal: a lost one is
	// never silently replaced.
	if a.j.kek, err = keystore.LoadKEK(cfg.KEKFile, len(recs) == 0 && !cfg.Journal.Shared()); err != nil {
		if i := slices.IndexFunc(recs, func(r *Record) bool { return r.KEKID != "" }); i >= 0 {
			return fmt.Errorf("%w (the journal already holds authorities sealed under key %s: restore that key file)", err, recs[i].KEKID)
		}
		return err
	}
	a.j.mu.Lock()
	defer a.j.mu.Unlock()
	if _, err := a.change(ctx, a.bootstrapManaged); err != nil {
		return err
	}
	if cfg.DataDir != "" {
		if _, err := os.Stat(filepath.Join(cfg.DataDir, keystore.RootKeyName)); err == nil {
			a.log.Warn("the CA key files of the data dir are no longer used: the journal holds the keys, sealed; delete them once you no longer need to downgrade",
				"files", []string{filepath.Join(cfg.DataDir, keystore.RootKeyName), filepath.Join(cfg.DataDir, keystore.IntermediateKeyName)})
		}
	}
	return a.reload(ctx)
}

// bootstrapManaged creates the first authority when the journal is empty:
// the CA files of DataDir if there are some (a CA that ran without journal
// keeps its root), else a new root and intermediate. It is active at once:
// no leaf was ever signed, so there is no peer to wait for.
func (a *Authority) bootstrapManaged(t *Txn) error {
	if len(t.Recs) > 0 {
		return nil
	}
	ca, reason, err := a.initialCA()
	if err != nil {
		return err
	}
	r, err := a.newManagedRecord(ca)
	if err != nil {
		return err
	}
	t.Add(r, StateActive, reason)
	return nil
}

// initialCA returns the CA files of DataDir, or a new CA.
func (a *Authority) initialCA() (*keystore.CA, string, error) {
	cfg := a.j.cfg
	if cfg.DataDir != "" {
		ca, err := keystore.Import(storeConfig(cfg))
		switch {
		case err == nil:
			return ca, "bootstrap: imported the CA files of " + cfg.DataDir, nil
		case !errors.Is(err, keystore.ErrNoRoot):
			return nil, "", err
		}
	}
	ca, err := keystore.Generate(storeConfig(cfg))
	return ca, "bootstrap: generated a new root and intermediate", err
}

// newManagedRecord seals ca's keys into a new record (state unset).
func (a *Authority) newManagedRecord(ca *keystore.CA) (*Record, error) {
	id := AuthorityID(ca.Cert)
	r := &Record{ID: id, Source: SourceManaged, Chain: DERs(ca.Chain), Roots: DERs([]*x509.Certificate{ca.Root}),
		KEKID: a.j.kek.ID(), MaxTTL: Duration(a.life.Max()), Certs: ca.Chain, RootCerts: []*x509.Certificate{ca.Root}}
	var err error
	if r.SealedKey, r.SealedRootKey, err = a.j.kek.Seal(id, ca); err != nil {
		return nil, err
	}
	return r, nil
}

// noKEK refuses to open the keys of managed authority r without a KEK.
func noKEK(r *Record) error {
	return fmt.Errorf("%w: authority %s is managed, and this CA has no key-encryption key (plug-in mode): set the KEK file", keystore.ErrKEK, r.ID)
}

// keyFor returns r's signing key, as a CA that signs with it (a.j.mu held).
func (a *Authority) keyFor(r *Record) (*keystore.CA, error) {
	if k, ok := a.j.keys[r.ID]; ok {
		return k, nil
	}
	if r.Source == SourcePlugin && !a.j.plugin() {
		return nil, fmt.Errorf("authority: authority %s is a plug-in CA but this CA runs without plug-in files: start it with the same root, intermediate and key files", r.ID)
	}
	if r.Source == SourcePlugin {
		return nil, fmt.Errorf("authority: the key of plug-in authority %s is not in this replica's files (%s): mount the same files on every replica",
			r.ID, a.j.cfg.IntermediateKeyFile)
	}
	if a.j.kek == nil {
		return nil, noKEK(r)
	}
	k, err := a.j.kek.OpenSigning(r.ID, r.KEKID, r.SealedKey, r.Certs)
	if err != nil {
		return nil, err
	}
	a.j.keys[r.ID] = k
	return k, nil
}

// canSign reports whether this replica holds r's key, without opening it.
func (a *Authority) canSign(r *Record) bool {
	if _, ok := a.j.keys[r.ID]; ok {
		return true
	}
	return r.Source == SourceManaged && a.j.kek != nil && r.KEKID == a.j.kek.ID()
}

// reload reads the journal and installs it (a.j.mu held).
func (a *Authority) reload(ctx context.Context) error {
	var recs []*Record
	err := a.j.db.View(ctx, func(tx store.Tx) error {
		var err error
		recs, err = ReadRecords(tx)
		return err
	})
	if err != nil {
		a.j.metrics.ReloadErrors.Inc()
		return fmt.Errorf("authority: read journal: %w", err)
	}
	return a.install(recs)
}

// install makes recs' active authority the signer and their roots the
// bundle (a.j.mu held). It publishes a new snapshot, and fires Changed,
// only if either changed. If the active authority's key cannot be opened
// here, the current signer keeps signing and its root stays in the bundle.
func (a *Authority) install(recs []*Record) error {
	a.j.metrics.Observe(recs, a.j.schedule.MaxTTL)
	active := FindState(recs, StateActive)
	if active == nil {
		return errors.New("authority: the journal has no active authority")
	}
	roots, tainted := BundleOf(recs), taintedOf(recs)
	cur := a.keys()
	if cur != nil && cur.ID == active.ID && sameCerts(cur.Roots, roots) && sameCerts(cur.Tainted, tainted) {
		return nil
	}
	var gen uint64 = 1
	if cur != nil {
		gen = cur.Gen + 1
	}
	key, err := a.keyFor(active)
	if err != nil {
		a.j.metrics.ReloadErrors.Inc()
		if cur == nil {
			return err
		}
		a.log.Error("cannot sign with the active authority; the previous one keeps signing", "active", active.ID,
			"signing", cur.ID, "error", err.Error())
		if !slices.ContainsFunc(roots, cur.Root.Equal) {
			roots = append(roots, cur.Root)
		}
		if !sameCerts(cur.Roots, roots) || !sameCerts(cur.Tainted, tainted) {
			next := *cur
			next.Roots, next.Tainted, next.Gen = roots, tainted, gen
			a.publish(&next)
		}
		return err
	}
	a.publish(keystore.CA{ID: active.ID, Gen: gen, Cert: active.Certs[0], Chain: active.Certs,
		Root: active.RootCerts[0], Roots: roots, Tainted: tainted}.With(key))
	return nil
}

// taintedOf returns the signing certificates of the tainted authorities.
func taintedOf(recs []*Record) []*x509.Certificate {
	var out []*x509.Certificate
	for _, r := range recs {
		if r.State == StateTainted {
			out = append(out, r.Certs[0])
		}
	}
	return out
}

func (a *Authority) publish(ca *keystore.CA) {
	prev := a.keys()
	a.cur.Store(ca)
	a.notify.fire()
	if prev != nil && prev.ID != ca.ID {
		a.log.Info("signing authority changed", "from", prev.ID, "to", ca.ID,
			"intermediate_not_after", ca.Cert.NotAfter, "bundle_roots", len(ca.Roots))
	}
}

// Follow keeps the CA in step with the journal until ctx ends: each time
// the store signals a commit (store.DB.Changed: by another replica when the
// store is shared) it re-reads the journal and switches signer and bundle
// accordingly. A failed read is logged and retried at the next signal or
// Tick. Without a journal it only waits for ctx.
func (a *Authority) Follow(ctx context.Context) error {
	if a.j == nil {
		<-ctx.Done()
		return nil
	}
	for {
		changed := a.j.db.Changed()
		a.j.mu.Lock()
		err := a.reload(ctx)
		a.j.mu.Unlock()
		if err != nil && ctx.Err() == nil {
			a.log.Error("following the authority journal", "error", err.Error())
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		}
	}
}

// Run follows the journal (Follow) and calls Tick at every value of ticks
// (the server passes a time.Ticker's channel, every few seconds; tests a
// channel of their own), logging what Tick reports, until ctx ends.
func (a *Authority) Run(ctx context.Context, ticks <-chan time.Time) error {
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = a.Follow(ctx)
	}()
	defer func() { <-done }()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-ticks:
			if err := a.Tick(ctx); err != nil && ctx.Err() == nil {
				a.log.Warn("authority rotation step", "error", err.Error())
			}
		}
	}
}

// Tick runs one step of rotation: it checks the plug-in files for a new
// intermediate or new roots, re-reads the journal (so a lost change signal
// is caught up, and a replica whose files lagged behind another's switches
// once they hold the active key), and makes the transitions the rotation policy has due: prepare
// the next authority, activate a prepared one whose root has been published
// for the publish delay, retire old and tainted ones whose last leaf has
// expired. The server calls it every few seconds; every replica may (each
// transition re-checks the journal inside its transaction). Without a
// journal it does nothing.
func (a *Authority) Tick(ctx context.Context) error {
	if a.j == nil {
		return nil
	}
	a.j.mu.Lock()
	defer a.j.mu.Unlock()
	var errs []error
	if a.j.plugin() { // first: new files may hold the key the journal's active authority needs here
		if err := a.checkFiles(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if err := a.reload(ctx); err != nil {
		errs = append(errs, err)
	}
	if err := a.rotate(ctx); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// rotate makes the steps the schedule has due, deciding again inside the
// transaction (a.j.mu held). A step that fails (every refusal comes before
// any change) does not hold back the others.
func (a *Authority) rotate(ctx context.Context) error {
	var due bool
	err := a.j.db.View(ctx, func(tx store.Tx) error {
		recs, err := ReadRecords(tx)
		due = len(a.j.schedule.Plan(recs, a.clock(), publishedIn(tx), a.canSign)) > 0
		return err
	})
	if err != nil || !due {
		return err
	}
	var failed []error
	_, err = a.change(ctx, func(t *Txn) error {
		failed = nil
		for _, s := range a.j.schedule.Plan(t.Recs, t.Now, publishedIn(t.Tx), a.canSign) {
			if err := a.apply(t, s); err != nil {
				failed = append(failed, err)
			}
		}
		return nil
	})
	return errors.Join(append(failed, err)...)
}

func publishedIn(tx store.Tx) func(*x509.Certificate) (time.Time, bool) {
	return func(c *x509.Certificate) (time.Time, bool) { return PublishedAt(tx, c) }
}

// apply makes one step of the schedule.
func (a *Authority) apply(t *Txn, s Step) error {
	switch s.Kind {
	case StepPrepare:
		_, err := a.prepareIn(t, s.NewRoot, s.Reason)
		return err
	case StepActivate:
		return a.activateIn(t, s.ID, false, s.Reason)
	case StepRetire:
		return a.revokeIn(t, s.ID, false, s.Reason)
	}
	return nil
}
