package rotation

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/castellan-dev/castellan/internal/clock"

	"github.com/castellan-dev/castellan/ca/authority/internal/keystore"
	"github.com/castellan-dev/castellan/ca/authority/journal"
	"github.com/castellan-dev/castellan/ca/store"
	"github.com/prometheus/client_golang/prometheus"
)

// Config configures the journal of an Authority (ca/authority's Config,
// with its defaults applied).
type Config struct {
	// DB is the journal's keyspace of the CA's store.
	DB store.DB
	// Store is the CA's key store: trust domain, data dir (CA files to
	// import on first start), plug-in files, TTLs, clock and logger.
	Store keystore.Config
	// KEKFile is the key-encryption key that seals managed authorities'
	// keys ("" only for a plug-in CA).
	KEKFile string
	// PublishDelay and PrepareAt are the rotation policy (journal.Schedule).
	PublishDelay time.Duration
	PrepareAt    float64
	// OnTransition, when set, is called inside the journal's transaction
	// for every state change, before it commits; an error aborts it.
	OnTransition func(context.Context, journal.Transition) error
	// Registry receives the authority metrics (nil -> none).
	Registry prometheus.Registerer
}

// Journal keeps a CA in step with its authority journal: it installs the
// active authority into the CA in force (keystore.Current), makes the
// transitions operators ask for and the schedule has due, and applies the
// plug-in files. A nil *Journal is a CA without journal: its methods
// refuse transitions, list nothing and only wait.
type Journal struct {
	db       store.DB
	cfg      Config
	schedule journal.Schedule
	metrics  *journal.Metrics
	cur      *keystore.Current
	log      *slog.Logger
	clock    clock.Clock

	// mu serializes every read-and-install and every transition of this
	// process, so that an older view of the journal is never installed
	// over a newer one.
	mu    sync.Mutex
	kek   *keystore.KEK           // nil: no managed authority can be opened
	keys  map[string]*keystore.CA // opened signing keys by authority ID
	files [32]byte                // hash of the plug-in files last applied
}

func (j *Journal) plugin() bool { return j.cfg.Store.RootCertFile != "" }

// Open opens the CA from the journal, bootstrapping it on first start,
// and publishes its active authority into cur. The caller then runs
// Follow (or Run) and calls Tick periodically.
func Open(ctx context.Context, cfg Config, cur *keystore.Current) (*Journal, error) {
	m, err := journal.NewMetrics(cfg.Registry)
	if err != nil {
		return nil, err
	}
	j := &Journal{
		db: cfg.DB, cfg: cfg, metrics: m, keys: map[string]*keystore.CA{}, cur: cur,
		log: cfg.Store.Logger, clock: cfg.Store.Clock,
		schedule: journal.Schedule{PrepareAt: cfg.PrepareAt, PublishDelay: cfg.PublishDelay,
			IntermediateTTL: cfg.Store.IntermediateTTL, MaxTTL: cfg.Store.MaxTTL},
	}
	if j.plugin() {
		return j, j.startPlugin(ctx)
	}
	return j, j.openManaged(ctx)
}

// openManaged opens a managed CA: the KEK, then the journal, bootstrapped
// if it is empty.
func (j *Journal) openManaged(ctx context.Context) error {
	cfg := j.cfg
	if cfg.KEKFile == "" {
		return errors.New("authority: a journal needs a key-encryption key: set the KEK file or the data dir")
	}
	var recs []*journal.Record
	var err error
	if err := cfg.DB.View(ctx, func(tx store.Tx) error {
		recs, err = journal.ReadRecords(tx)
		return err
	}); err != nil {
		return fmt.Errorf("authority: read journal: %w", err)
	}
	// A KEK is generated only for a new, unshared journal: a lost one is
	// never silently replaced.
	if j.kek, err = keystore.LoadKEK(cfg.KEKFile, len(recs) == 0 && !cfg.DB.Shared()); err != nil {
		if i := slices.IndexFunc(recs, func(r *journal.Record) bool { return r.KEKID != "" }); i >= 0 {
			return fmt.Errorf("%w (the journal already holds authorities sealed under key %s: restore that key file)", err, recs[i].KEKID)
		}
		return err
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if _, err := j.change(ctx, j.bootstrapManaged); err != nil {
		return err
	}
	if dir := cfg.Store.DataDir; dir != "" {
		if _, err := os.Stat(filepath.Join(dir, keystore.RootKeyName)); err == nil {
			j.log.Warn("the CA key files of the data dir are no longer used: the journal holds the keys, sealed; delete them once you no longer need to downgrade",
				"files", []string{filepath.Join(dir, keystore.RootKeyName), filepath.Join(dir, keystore.IntermediateKeyName)})
		}
	}
	return j.reload(ctx)
}

// bootstrapManaged creates the first authority when the journal is empty:
// the CA files of DataDir if there are some (a CA that ran without journal
// keeps its root), else a new root and intermediate. It is active at once:
// no leaf was ever signed, so there is no peer to wait for.
func (j *Journal) bootstrapManaged(t *journal.Txn) error {
	if len(t.Recs) > 0 {
		return nil
	}
	ca, reason, err := j.initialCA()
	if err != nil {
		return err
	}
	r, err := j.newManagedRecord(ca)
	if err != nil {
		return err
	}
	t.Add(r, journal.StateActive, reason)
	return nil
}

// initialCA returns the CA files of DataDir, or a new CA.
func (j *Journal) initialCA() (*keystore.CA, string, error) {
	cfg := j.cfg
	if cfg.Store.DataDir != "" {
		ca, err := keystore.Import(cfg.Store)
		switch {
		case err == nil:
			return ca, "bootstrap: imported the CA files of " + cfg.Store.DataDir, nil
		case !errors.Is(err, keystore.ErrNoRoot):
			return nil, "", err
		}
	}
	ca, err := keystore.Generate(cfg.Store)
	return ca, "bootstrap: generated a new root and intermediate", err
}

// newManagedRecord seals ca's keys into a new record (state unset).
func (j *Journal) newManagedRecord(ca *keystore.CA) (*journal.Record, error) {
	id := journal.AuthorityID(ca.Cert)
	r := &journal.Record{ID: id, Source: journal.SourceManaged, Chain: journal.DERs(ca.Chain), Roots: journal.DERs([]*x509.Certificate{ca.Root}),
		KEKID: j.kek.ID(), MaxTTL: journal.Duration(j.cfg.Store.MaxTTL), Certs: ca.Chain, RootCerts: []*x509.Certificate{ca.Root}}
	var err error
	if r.SealedKey, r.SealedRootKey, err = j.kek.Seal(id, ca); err != nil {
		return nil, err
	}
	return r, nil
}

// noKEK refuses to open the keys of managed authority r without a KEK.
func noKEK(r *journal.Record) error {
	return fmt.Errorf("%w: authority %s is managed, and this CA has no key-encryption key (plug-in mode): set the KEK file", keystore.ErrKEK, r.ID)
}

// keyFor returns r's signing key, as a CA that signs with it (j.mu held).
func (j *Journal) keyFor(r *journal.Record) (*keystore.CA, error) {
	if k, ok := j.keys[r.ID]; ok {
		return k, nil
	}
	if r.Source == journal.SourcePlugin && !j.plugin() {
		return nil, fmt.Errorf("authority: authority %s is a plug-in CA but this CA runs without plug-in files: start it with the same root, intermediate and key files", r.ID)
	}
	if r.Source == journal.SourcePlugin {
		return nil, fmt.Errorf("authority: the key of plug-in authority %s is not in this replica's files (%s): mount the same files on every replica",
			r.ID, j.cfg.Store.IntermediateKeyFile)
	}
	if j.kek == nil {
		return nil, noKEK(r)
	}
	k, err := j.kek.OpenSigning(r.ID, r.KEKID, r.SealedKey, r.Certs)
	if err != nil {
		return nil, err
	}
	j.keys[r.ID] = k
	return k, nil
}

// canSign reports whether this replica holds r's key, without opening it.
func (j *Journal) canSign(r *journal.Record) bool {
	if _, ok := j.keys[r.ID]; ok {
		return true
	}
	return r.Source == journal.SourceManaged && j.kek != nil && r.KEKID == j.kek.ID()
}

// reload reads the journal and installs it (j.mu held).
func (j *Journal) reload(ctx context.Context) error {
	var recs []*journal.Record
	err := j.db.View(ctx, func(tx store.Tx) error {
		var err error
		recs, err = journal.ReadRecords(tx)
		return err
	})
	if err != nil {
		j.metrics.ReloadErrors.Inc()
		return fmt.Errorf("authority: read journal: %w", err)
	}
	return j.install(recs)
}

// install makes recs' active authority the signer and their roots the
// bundle (j.mu held). It publishes a new snapshot, and fires Changed,
// only if either changed. If the active authority's key cannot be opened
// here, the current signer keeps signing and its root stays in the bundle.
func (j *Journal) install(recs []*journal.Record) error {
	j.metrics.Observe(recs, j.schedule.MaxTTL)
	active := journal.FindState(recs, journal.StateActive)
	if active == nil {
		return errors.New("authority: the journal has no active authority")
	}
	roots, tainted := journal.BundleOf(recs), taintedOf(recs)
	cur := j.cur.Load()
	if cur != nil && cur.ID == active.ID && sameCerts(cur.Roots, roots) && sameCerts(cur.Tainted, tainted) {
		return nil
	}
	var gen uint64 = 1
	if cur != nil {
		gen = cur.Gen + 1
	}
	key, err := j.keyFor(active)
	if err != nil {
		j.metrics.ReloadErrors.Inc()
		if cur == nil {
			return err
		}
		j.log.Error("cannot sign with the active authority; the previous one keeps signing", "active", active.ID,
			"signing", cur.ID, "error", err.Error())
		if !slices.ContainsFunc(roots, cur.Root.Equal) {
			roots = append(roots, cur.Root)
		}
		if !sameCerts(cur.Roots, roots) || !sameCerts(cur.Tainted, tainted) {
			next := *cur
			next.Roots, next.Tainted, next.Gen = roots, tainted, gen
			j.publish(&next)
		}
		return err
	}
	j.publish(keystore.CA{ID: active.ID, Gen: gen, Cert: active.Certs[0], Chain: active.Certs,
		Root: active.RootCerts[0], Roots: roots, Tainted: tainted}.With(key))
	return nil
}

// taintedOf returns the signing certificates of the tainted authorities.
func taintedOf(recs []*journal.Record) []*x509.Certificate {
	var out []*x509.Certificate
	for _, r := range recs {
		if r.State == journal.StateTainted {
			out = append(out, r.Certs[0])
		}
	}
	return out
}

// publish makes ca the CA in force.
func (j *Journal) publish(ca *keystore.CA) {
	prev := j.cur.Load()
	j.cur.Publish(ca)
	if prev != nil && prev.ID != ca.ID {
		j.log.Info("signing authority changed", "from", prev.ID, "to", ca.ID,
			"intermediate_not_after", ca.Cert.NotAfter, "bundle_roots", len(ca.Roots))
	}
}

// Follow keeps the CA in step with the journal until ctx ends: each time
// the store signals a commit (store.DB.Changed: by another replica when the
// store is shared) it re-reads the journal and switches signer and bundle
// accordingly. A failed read is logged and retried at the next signal or
// Tick. Without a journal it only waits for ctx.
func (j *Journal) Follow(ctx context.Context) error {
	if j == nil {
		<-ctx.Done()
		return nil
	}
	for {
		changed := j.db.Changed()
		j.mu.Lock()
		err := j.reload(ctx)
		j.mu.Unlock()
		if err != nil && ctx.Err() == nil {
			j.log.Error("following the authority journal", "error", err.Error())
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
func (j *Journal) Run(ctx context.Context, ticks <-chan time.Time) error {
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = j.Follow(ctx)
	}()
	defer func() { <-done }()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-ticks:
			if err := j.Tick(ctx); err != nil && ctx.Err() == nil {
				j.log.Warn("authority rotation step", "error", err.Error())
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
func (j *Journal) Tick(ctx context.Context) error {
	if j == nil {
		return nil
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	var errs []error
	if j.plugin() { // first: new files may hold the key the journal's active authority needs here
		if err := j.checkFiles(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if err := j.reload(ctx); err != nil {
		errs = append(errs, err)
	}
	if err := j.rotate(ctx); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// rotate makes the steps the schedule has due, deciding again inside the
// transaction (j.mu held). A step that fails (every refusal comes before
// any change) does not hold back the others.
func (j *Journal) rotate(ctx context.Context) error {
	var due bool
	err := j.db.View(ctx, func(tx store.Tx) error {
		recs, err := journal.ReadRecords(tx)
		due = len(j.schedule.Plan(recs, j.clock.Now(), publishedIn(tx), j.canSign)) > 0
		return err
	})
	if err != nil || !due {
		return err
	}
	var failed []error
	_, err = j.change(ctx, func(t *journal.Txn) error {
		failed = nil
		for _, s := range j.schedule.Plan(t.Recs, t.Now, publishedIn(t.Tx), j.canSign) {
			if err := j.apply(t, s); err != nil {
				failed = append(failed, err)
			}
		}
		return nil
	})
	return errors.Join(append(failed, err)...)
}

func publishedIn(tx store.Tx) func(*x509.Certificate) (time.Time, bool) {
	return func(c *x509.Certificate) (time.Time, bool) { return journal.PublishedAt(tx, c) }
}

// apply makes one step of the schedule.
func (j *Journal) apply(t *journal.Txn, s journal.Step) error {
	switch s.Kind {
	case journal.StepPrepare:
		_, err := j.prepareIn(t, s.NewRoot, s.Reason)
		return err
	case journal.StepActivate:
		return j.activateIn(t, s.ID, false, s.Reason)
	case journal.StepRetire:
		return j.revokeIn(t, s.ID, false, s.Reason)
	}
	return nil
}

// sameCerts reports whether a and b hold the same certificates in order.
func sameCerts(a, b []*x509.Certificate) bool {
	return slices.EqualFunc(a, b, func(x, y *x509.Certificate) bool { return bytes.Equal(x.Raw, y.Raw) })
}
