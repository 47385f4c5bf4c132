// Package authority is Castellan's signing core: it holds the CA's
// authorities (root, intermediate and their keys), validates certificate
// signing requests, issues X.509-SVIDs under a cfssl signing policy, and
// rotates the authorities without a failed request.
//
// It is the face of four packages below it: ca/authority/leaf (the leaf: CSR
// checks, template, DER encoder and parse-back), ca/authority/internal/keystore
// (the keys: generated, in the data dir, plugged in, sealed under the KEK),
// ca/authority/journal (the authority journal's records, states and
// schedule) and ca/authority/rotation (the runner of the journal, embedded
// in the Authority); this one holds the Authority itself (configuration,
// signing, CRL signing, snapshots).
//
// # Fixed CA
//
// Without Config.Journal the CA is fixed for the life of the process:
// generated on first start into Config.DataDir (an ECDSA P-256 root, 10
// years, and an intermediate, 1 year, reloaded after), or plugged in from
// PEM files (Config.RootCertFile, IntermediateCertFile, IntermediateKeyFile)
// read once.
//
// # The authority journal
//
// With Config.Journal (a keyspace of the CA's store, package ca/store; the
// server gives "authority") every X.509 authority the trust domain has had
// is a record of the journal, in one of five states:
//
//   - prepared: its root is in the trust bundle; it does not sign yet;
//   - active: it signs every SVID; exactly one authority is active;
//   - old: it no longer signs; its root stays trusted until the last leaf it
//     may have signed has expired (journal.Info.LeavesExpireBy: when it stopped
//     signing, plus the max SVID TTL and a minute for replicas to follow);
//   - tainted: still trusted, but every leaf under it must be replaced now;
//   - revoked: removed from the trust bundle.
//
// The trust bundle is the roots of every prepared, active, old and tainted
// authority; Sign always uses the active one. Snapshot returns both, taken
// together; Changed signals a change of either; Authorities lists the
// journal. The journal also records when each root entered the bundle.
//
// Transitions, and the ones refused (journal.TransitionError: gRPC
// FailedPrecondition, NotFound for an unknown ID):
//
//   - (none) -> active: the first authority (bootstrap; the CA files of
//     DataDir are imported if there are some, so a CA keeps its root).
//   - (none) -> prepared: Prepare (managed: a new intermediate under the
//     active root, or under a new root); refused while another is prepared,
//     and on a plug-in CA (rotate it by replacing its files).
//   - prepared -> active, active -> old: Activate; refused unless the
//     authority is prepared, valid now and its key opens on this replica;
//     refused unless forced before its root has been in the bundle for the
//     publish delay.
//   - old -> tainted: Taint; refused for the active one (activate another
//     first), a prepared one (revoke it: it never signed), and one already
//     tainted or revoked.
//   - prepared|old|tainted -> revoked: Revoke; refused for the active one
//     and a revoked one, and unless forced for one whose leaves may not all
//     have expired.
//   - old|tainted -> revoked: retired by Tick once their leaves expired.
//   - active -> active: a plug-in authority whose root file changed.
//
// Every transition is passed to Config.OnTransition inside the journal's
// transaction, before it commits (the server appends a ledger event there);
// if the hook fails the transition is not made.
//
// # Rotation policy (managed CA)
//
// Tick, called every few seconds by the server, prepares the next authority
// once the active one is past Config.PrepareAt (default half) of its
// lifetime: a new intermediate under the same root, or a new root and
// intermediate when the root has less than an intermediate lifetime left.
// It activates a prepared authority as soon as its root has been in the
// bundle for Config.PublishDelay (so an intermediate under the same root at
// once), and retires (revokes) old and tainted authorities whose last leaf
// has expired. The default publish delay is the max SVID TTL plus five
// minutes: see journal.DefaultPublishDelay for why.
//
// # Plug-in CA (Istio's cacerts layout)
//
// With a journal, Tick also re-reads the plug-in files (polling their
// content hash: no inotify, which Kubernetes Secret volumes defeat with
// their symlink swaps anyway) and picks up a new intermediate, or new roots,
// without a restart. Every root of the root file is published. A new
// intermediate whose root has not been in the bundle for the publish delay
// is refused with an error saying until when (log, metric
// castellan_ca_authority_refusals_total): it is recorded prepared, which
// publishes its roots, the current authority keeps signing, and Tick
// activates it once the delay has passed. The key of a plug-in authority
// stays in its files, never in the journal.
//
// # Keys in the journal, and replicas
//
// The private keys of managed authorities are stored in the journal sealed
// with AES-256-GCM under a key-encryption key read from Config.KEKFile; the
// additional data binds each ciphertext to its authority's ID and slot, so
// no key is ever in the store in clear, and a record's sealed key does not
// open in another record. The KEK file is generated (0600) when missing only
// if the store is not shared; replicas sharing a PostgreSQL store must mount
// the same one (a Kubernetes Secret). A replica with another KEK, or a
// tampered record, fails at start with an error saying which: it never
// generates a new CA over an existing journal.
//
// Replicas sharing a store agree on one active authority, because it lives
// in the shared store: each replica runs Follow, which re-reads the journal
// whenever the store signals a commit, and switches its signer and bundle.
// The alternative, one authority per replica under a shared bundle, would
// multiply the intermediates every peer must accept and the keys to
// protect, and make taint and revoke per-replica operations. Every replica
// may call Tick: each transition re-reads the journal inside its
// serialized transaction, so two replicas never both prepare or activate.
//
// # Signing
//
// Leaves are not signed with x509.CreateCertificate: it verifies every
// signature it has just made, which for an ECDSA issuer doubles the
// verification work of an issuance (the CSR's signature must be verified
// anyway) and costs more than half of CreateCertificate itself. Sign builds
// the TBSCertificate with cryptobyte from the same template (package leaf), signs it once
// and parses the result. The tests build every leaf shape both ways and
// compare them field by field and byte for byte, and check each leaf's
// signature against its issuer; RSA issuer signatures, which are cheap to
// verify, are still checked at signing time. An Authority is safe for
// concurrent use; each signing uses one snapshot of the active authority.
package authority

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/castellan-dev/castellan/internal/clock"

	"github.com/cloudflare/cfssl/config"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/castellan-dev/castellan/ca/authority/internal/keystore"
	"github.com/castellan-dev/castellan/ca/authority/journal"
	"github.com/castellan-dev/castellan/ca/authority/leaf"
	"github.com/castellan-dev/castellan/ca/authority/rotation"
	"github.com/castellan-dev/castellan/ca/lifetime"
	"github.com/castellan-dev/castellan/ca/store"
	"github.com/castellan-dev/castellan/internal/serial"
)

// Defaults applied by New to zero Config fields.
const (
	DefaultTTL             = time.Hour
	DefaultMaxTTL          = 24 * time.Hour
	DefaultRootTTL         = 10 * 365 * 24 * time.Hour
	DefaultIntermediateTTL = 365 * 24 * time.Hour
)

// Config configures an Authority.
type Config struct {
	// TrustDomain is the trust domain every issued SVID belongs to. Required.
	TrustDomain spiffeid.TrustDomain
	// DataDir, without a journal, is where a generated CA lives: root.pem, root.key,
	// intermediate.pem and intermediate.key (files 0600, directory 0700).
	// They are created on first start and reloaded after; an intermediate
	// that has expired, or has less than MaxTTL left, is re-issued from the
	// root on start. Empty DataDir with no plugged-in CA gives an in-memory
	// CA that is lost on exit (tests, demos).
	DataDir string
	// RootCertFile, IntermediateCertFile and IntermediateKeyFile plug in an
	// existing CA: all three set or none. RootCertFile may hold several
	// roots (the bundle); IntermediateCertFile holds the signing certificate
	// first, optionally followed by further intermediates up to a root.
	RootCertFile, IntermediateCertFile, IntermediateKeyFile string
	// DefaultTTL is the lifetime of an SVID when the request asks for none
	// (0 -> 1h). MaxTTL is the longest lifetime a request may ask for
	// (0 -> 24h).
	DefaultTTL time.Duration
	MaxTTL     time.Duration
	// RootTTL and IntermediateTTL are the lifetimes of a generated root
	// (0 -> 10y) and intermediate (0 -> 1y, never past the root).
	RootTTL, IntermediateTTL time.Duration
	// Journal, when set, keeps the CA's authorities in this keyspace of the
	// CA's store (the server gives the keyspace "authority") and turns on
	// rotation: see the package comment. DataDir then only holds the KEK
	// (when KEKFile is empty) and, on first start, CA files to import.
	Journal store.DB
	// KEKFile is the key-encryption key that seals the private keys of
	// managed authorities in the journal (32 bytes: raw, hex or base64).
	// Empty: DataDir/authority.kek. A missing file is generated (0600)
	// only for a new journal that is not shared; replicas sharing a store
	// must mount the same file, and a lost one is never replaced.
	KEKFile string
	// PublishDelay is how long a new root must have been in the trust
	// bundle before an authority chaining to it may sign (0 ->
	// journal.DefaultPublishDelay(MaxTTL)).
	PublishDelay time.Duration
	// PrepareAt is the fraction of the active authority's lifetime after
	// which the next one is prepared (0 -> 0.5; must be in (0, 1)).
	PrepareAt float64
	// OnTransition, when set, is called inside the journal's transaction
	// for every state change, before it commits (the server appends the
	// ledger event there); an error aborts the transition. It runs inside
	// the journal's Update: it must not start an Update on the same bbolt
	// file (bbolt has one writer; the ledger has its own file), nor call
	// the Authority's transition methods.
	OnTransition func(context.Context, journal.Transition) error
	// Registry receives the authority metrics (nil -> none).
	Registry prometheus.Registerer
	// Clock tells the time (nil: the wall clock).
	Clock clock.Clock
	// Logger receives CA lifecycle and issuance logs (nil -> discard).
	Logger *slog.Logger
}

// Authority signs X.509-SVIDs for one trust domain.
type Authority struct {
	td     spiffeid.TrustDomain
	life   lifetime.Policy
	clock  clock.Clock
	log    *slog.Logger
	policy *config.Signing
	cur    *keystore.Current // what signs now, and the bundle
	// Journal runs the authority journal; nil for a fixed CA (Config.Journal
	// unset). Its methods (Prepare, Activate, Taint, Revoke, Authorities,
	// Follow, Run, Tick) are the Authority's.
	*rotation.Journal
	// leafParses: crypto/x509 parsed a leaf of the trust domain (sign.go,
	// parseLeaf).
	leafParses atomic.Bool
}

// keys returns the current snapshot.
func (a *Authority) keys() *keystore.CA { return a.cur.Load() }

// KEKName is the default key-encryption key file inside Config.DataDir.
const KEKName = "authority.kek"

// New loads or creates the CA described by cfg: Open with a background
// context.
func New(cfg Config) (*Authority, error) {
	return Open(context.Background(), cfg)
}

// Open loads or creates the CA described by cfg. Without Config.Journal the
// CA is fixed: generated in (or reloaded from) DataDir, or plugged in from
// files read once. With a journal it is opened from, or bootstrapped into,
// the journal (see the package comment); the caller then runs Follow and
// calls Tick periodically.
func Open(ctx context.Context, cfg Config) (*Authority, error) {
	cfg, err := withDefaults(cfg)
	if err != nil {
		return nil, err
	}
	life, err := lifetime.New(cfg.DefaultTTL, cfg.MaxTTL)
	if err != nil {
		return nil, fmt.Errorf("authority: %w", err)
	}
	policy, err := leaf.NewPolicy(cfg.DefaultTTL)
	if err != nil {
		return nil, err
	}
	a := &Authority{
		td:     cfg.TrustDomain,
		life:   life,
		clock:  cfg.Clock,
		log:    cfg.Logger,
		policy: policy,
		cur:    keystore.NewCurrent(),
	}
	if cfg.Journal != nil {
		a.Journal, err = rotation.Open(ctx, rotation.Config{
			DB: cfg.Journal, Store: storeConfig(cfg), KEKFile: cfg.KEKFile,
			PublishDelay: cfg.PublishDelay, PrepareAt: cfg.PrepareAt,
			OnTransition: cfg.OnTransition, Registry: cfg.Registry,
		}, a.cur)
	} else {
		err = a.openFixed(cfg)
	}
	if err != nil {
		return nil, err
	}
	ca := a.keys()
	cfg.Logger.Info("CA ready", "trust_domain", cfg.TrustDomain.String(), "authority", ca.ID,
		"root_subject", ca.Root.Subject.String(), "root_not_after", ca.Root.NotAfter,
		"intermediate_serial", serial.FromBig(ca.Cert.SerialNumber).String(), "intermediate_not_after", ca.Cert.NotAfter,
		"bundle_roots", len(ca.Roots))
	return a, nil
}

// openFixed loads the CA of a server without journal.
func (a *Authority) openFixed(cfg Config) error {
	var ca *keystore.CA
	var err error
	switch {
	case cfg.RootCertFile != "":
		ca, err = keystore.LoadPluggedIn(storeConfig(cfg))
	case cfg.DataDir != "":
		ca, err = keystore.LoadOrGenerate(storeConfig(cfg))
	default:
		cfg.Logger.Warn("no data dir and no plugged-in CA: using an in-memory CA that is lost on exit",
			"trust_domain", cfg.TrustDomain.String())
		ca, err = keystore.Generate(storeConfig(cfg))
	}
	if err != nil {
		return err
	}
	a.cur.Publish(ca)
	return nil
}

// storeConfig is what the key store needs of cfg.
func storeConfig(cfg Config) keystore.Config {
	return keystore.Config{
		TrustDomain: cfg.TrustDomain, DataDir: cfg.DataDir,
		RootCertFile: cfg.RootCertFile, IntermediateCertFile: cfg.IntermediateCertFile, IntermediateKeyFile: cfg.IntermediateKeyFile,
		MaxTTL: cfg.MaxTTL, RootTTL: cfg.RootTTL, IntermediateTTL: cfg.IntermediateTTL, Clock: cfg.Clock, Logger: cfg.Logger,
	}
}

func withDefaults(cfg Config) (Config, error) {
	if cfg.TrustDomain.IsZero() {
		return cfg, errors.New("authority: trust domain is required")
	}
	if cfg.DefaultTTL == 0 {
		cfg.DefaultTTL = DefaultTTL
	}
	if cfg.MaxTTL == 0 {
		cfg.MaxTTL = DefaultMaxTTL
	}
	if cfg.RootTTL == 0 {
		cfg.RootTTL = DefaultRootTTL
	}
	if cfg.IntermediateTTL == 0 {
		cfg.IntermediateTTL = DefaultIntermediateTTL
	}
	cfg.Clock = clock.OrSystem(cfg.Clock)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.PublishDelay == 0 {
		cfg.PublishDelay = journal.DefaultPublishDelay(cfg.MaxTTL)
	}
	if cfg.PrepareAt == 0 {
		cfg.PrepareAt = journal.DefaultPrepareAt
	}
	if cfg.KEKFile == "" && cfg.DataDir != "" {
		cfg.KEKFile = filepath.Join(cfg.DataDir, KEKName)
	}
	return cfg, validate(cfg)
}

// validate checks a Config with its defaults applied.
func validate(cfg Config) error {
	switch {
	case cfg.DefaultTTL < 0 || cfg.MaxTTL < 0 || cfg.RootTTL < 0 || cfg.IntermediateTTL < 0:
		return errors.New("authority: TTLs must not be negative")
	case cfg.PublishDelay < 0:
		return errors.New("authority: publish delay must not be negative")
	case !(cfg.PrepareAt > 0 && cfg.PrepareAt < 1):
		return fmt.Errorf("authority: prepare-at fraction %v must be between 0 and 1", cfg.PrepareAt)
	case cfg.Journal != nil && cfg.RootCertFile == "" &&
		float64(cfg.PublishDelay) >= float64(cfg.IntermediateTTL)*(1-cfg.PrepareAt):
		return fmt.Errorf("authority: publish delay %s must be shorter than the %s between preparing the next authority and the active one's expiry (intermediate TTL %s, prepared at %s of it)",
			cfg.PublishDelay, time.Duration(float64(cfg.IntermediateTTL)*(1-cfg.PrepareAt)), cfg.IntermediateTTL, journal.Percent(cfg.PrepareAt))
	case cfg.IntermediateTTL <= cfg.MaxTTL:
		return fmt.Errorf("authority: intermediate TTL %s must exceed max SVID TTL %s", cfg.IntermediateTTL, cfg.MaxTTL)
	}
	set := 0
	for _, f := range []string{cfg.RootCertFile, cfg.IntermediateCertFile, cfg.IntermediateKeyFile} {
		if f != "" {
			set++
		}
	}
	if set != 0 && set != 3 {
		return errors.New("authority: a plugged-in CA needs all of root cert file, intermediate cert file and intermediate key file")
	}
	return nil
}

// Bundle returns the trust bundle: the roots that issued SVIDs chain to. The
// caller owns the returned bundle.
func (a *Authority) Bundle() *x509bundle.Bundle {
	return x509bundle.FromX509Authorities(a.td, a.keys().Roots)
}

// Intermediate returns the certificate that signs SVIDs now (it changes
// when another authority is activated; see Snapshot).
func (a *Authority) Intermediate() *x509.Certificate { return a.keys().Cert }

// Root returns the root the current intermediate chains to.
func (a *Authority) Root() *x509.Certificate { return a.keys().Root }

// TrustDomain returns the CA's trust domain.
func (a *Authority) TrustDomain() spiffeid.TrustDomain { return a.td }

// MaxTTL returns the longest SVID lifetime a request may ask for.
func (a *Authority) MaxTTL() time.Duration { return a.life.Max() }

// DefaultTTL returns the lifetime of an SVID when the request asks for none.
func (a *Authority) DefaultTTL() time.Duration { return a.life.Default() }

// Lifetime returns the CA's SVID lifetime policy (ca/lifetime).
func (a *Authority) Lifetime() lifetime.Policy { return a.life }

// ParseWorkloadCSR parses and checks a DER PKCS#10 request for a workload
// X.509-SVID of the CA's trust domain (leaf.ParseWorkloadCSR).
func (a *Authority) ParseWorkloadCSR(der []byte) (*leaf.CSR, error) {
	return leaf.ParseWorkloadCSR(a.td, der)
}

// ParseAgentCSR parses and checks a DER PKCS#10 request for an agent SVID
// (leaf.ParseAgentCSR).
func (a *Authority) ParseAgentCSR(der []byte) (*leaf.CSR, error) { return leaf.ParseAgentCSR(der) }
