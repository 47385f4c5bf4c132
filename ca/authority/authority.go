// Package authority is Castellan's signing core: it holds the CA's root and
// intermediate, validates certificate signing requests and issues
// X.509-SVIDs under a cfssl signing policy.
//
// The CA is either generated on first start into Config.DataDir (an ECDSA
// P-256 root, 10 years, and an intermediate, 1 year, reloaded after) or
// plugged in from PEM files (Config.RootCertFile, IntermediateCertFile,
// IntermediateKeyFile). An Authority is immutable after New and safe for
// concurrent use.
//
// Leaves are not signed with x509.CreateCertificate: it verifies every
// signature it has just made, which for an ECDSA issuer doubles the
// verification work of an issuance (the CSR's signature must be verified
// anyway) and costs more than half of CreateCertificate itself. Sign builds
// the TBSCertificate with cryptobyte from the same template, signs it once
// and parses the result. The tests build every leaf shape both ways and
// compare them field by field and byte for byte, and check each leaf's
// signature against its issuer; RSA issuer signatures, which are cheap to
// verify, are still checked at signing time.
package authority

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/cloudflare/cfssl/config"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

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
	// DataDir is where a generated CA lives: root.pem, root.key,
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
	// only when the journal is not shared; replicas sharing a store must
	// mount the same file.
	KEKFile string
	// PublishDelay is how long a new root must have been in the trust
	// bundle before an authority chaining to it may sign (0 ->
	// DefaultPublishDelay(MaxTTL)).
	PublishDelay time.Duration
	// PrepareAt is the fraction of the active authority's lifetime after
	// which the next one is prepared (0 -> 0.5; must be in (0, 1)).
	PrepareAt float64
	// OnTransition, when set, is called inside the journal's transaction
	// for every state change, before it commits (the server appends the
	// ledger event there); an error aborts the transition.
	OnTransition func(context.Context, Transition) error
	// Registry receives the authority metrics (nil -> none).
	Registry prometheus.Registerer
	// Clock returns the current time (nil -> time.Now).
	Clock func() time.Time
	// Logger receives CA lifecycle and issuance logs (nil -> discard).
	Logger *slog.Logger
}

// Authority signs X.509-SVIDs for one trust domain.
type Authority struct {
	td     spiffeid.TrustDomain
	life   lifetime.Policy
	clock  func() time.Time
	log    *slog.Logger
	policy *config.Signing
	cur    atomic.Pointer[caKeys] // what signs now, and the bundle
	notify *notifier
	j      *journal // nil: a fixed CA (Config.Journal unset)
}

// caKeys is the loaded CA material: one consistent snapshot of the signing
// authority and the trust bundle, replaced whole, never modified.
type caKeys struct {
	id    string              // authority ID (journal); "" for a fixed CA
	gen   uint64              // increases with every change
	cert  *x509.Certificate   // signing (intermediate) certificate
	key   crypto.Signer       // its private key
	chain []*x509.Certificate // cert, then further intermediates; no root
	root  *x509.Certificate   // root the chain verifies to
	roots []*x509.Certificate // the trust bundle
}

// keys returns the current snapshot.
func (a *Authority) keys() *caKeys { return a.cur.Load() }

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
	policy, err := newPolicy(cfg.DefaultTTL)
	if err != nil {
		return nil, err
	}
	a := &Authority{
		td:     cfg.TrustDomain,
		life:   life,
		clock:  cfg.Clock,
		log:    cfg.Logger,
		policy: policy,
		notify: newNotifier(),
	}
	if cfg.Journal != nil {
		err = a.openJournal(ctx, cfg)
	} else {
		err = a.openFixed(cfg)
	}
	if err != nil {
		return nil, err
	}
	ca := a.keys()
	cfg.Logger.Info("CA ready", "trust_domain", cfg.TrustDomain.String(), "authority", ca.id,
		"root_subject", ca.root.Subject.String(), "root_not_after", ca.root.NotAfter,
		"intermediate_serial", serial.FromBig(ca.cert.SerialNumber).String(), "intermediate_not_after", ca.cert.NotAfter,
		"bundle_roots", len(ca.roots))
	return a, nil
}

// openFixed loads the CA of a server without journal.
func (a *Authority) openFixed(cfg Config) error {
	var ca *caKeys
	var err error
	switch {
	case cfg.RootCertFile != "":
		ca, err = loadPluggedIn(cfg)
	case cfg.DataDir != "":
		ca, err = loadOrGenerate(cfg)
	default:
		cfg.Logger.Warn("no data dir and no plugged-in CA: using an in-memory CA that is lost on exit",
			"trust_domain", cfg.TrustDomain.String())
		ca, _, err = generateCA(cfg)
	}
	if err != nil {
		return err
	}
	a.cur.Store(ca)
	return nil
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
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.PublishDelay == 0 {
		cfg.PublishDelay = DefaultPublishDelay(cfg.MaxTTL)
	}
	if cfg.PrepareAt == 0 {
		cfg.PrepareAt = DefaultPrepareAt
	}
	if cfg.KEKFile == "" && cfg.DataDir != "" {
		cfg.KEKFile = filepath.Join(cfg.DataDir, KEKName)
	}
	switch {
	case cfg.DefaultTTL < 0 || cfg.MaxTTL < 0 || cfg.RootTTL < 0 || cfg.IntermediateTTL < 0:
		return cfg, errors.New("authority: TTLs must not be negative")
	case cfg.PublishDelay < 0:
		return cfg, errors.New("authority: publish delay must not be negative")
	case !(cfg.PrepareAt > 0 && cfg.PrepareAt < 1):
		return cfg, fmt.Errorf("authority: prepare-at fraction %v must be between 0 and 1", cfg.PrepareAt)
	case cfg.IntermediateTTL <= cfg.MaxTTL:
		return cfg, fmt.Errorf("authority: intermediate TTL %s must exceed max SVID TTL %s", cfg.IntermediateTTL, cfg.MaxTTL)
	}
	set := 0
	for _, f := range []string{cfg.RootCertFile, cfg.IntermediateCertFile, cfg.IntermediateKeyFile} {
		if f != "" {
			set++
		}
	}
	if set != 0 && set != 3 {
		return cfg, errors.New("authority: a plugged-in CA needs all of root cert file, intermediate cert file and intermediate key file")
	}
	return cfg, nil
}

// Bundle returns the trust bundle: the roots that issued SVIDs chain to. The
// caller owns the returned bundle.
func (a *Authority) Bundle() *x509bundle.Bundle {
	return x509bundle.FromX509Authorities(a.td, a.keys().roots)
}

// Intermediate returns the certificate that signs SVIDs now (it changes
// when another authority is activated; see Snapshot).
func (a *Authority) Intermediate() *x509.Certificate { return a.keys().cert }

// Root returns the root the current intermediate chains to.
func (a *Authority) Root() *x509.Certificate { return a.keys().root }

// Signer returns the current intermediate's private key.
func (a *Authority) Signer() crypto.Signer { return a.keys().key }

// TrustDomain returns the CA's trust domain.
func (a *Authority) TrustDomain() spiffeid.TrustDomain { return a.td }

// MaxTTL returns the longest SVID lifetime a request may ask for.
func (a *Authority) MaxTTL() time.Duration { return a.life.Max() }

// DefaultTTL returns the lifetime of an SVID when the request asks for none.
func (a *Authority) DefaultTTL() time.Duration { return a.life.Default() }

// Lifetime returns the CA's SVID lifetime policy (ca/lifetime).
func (a *Authority) Lifetime() lifetime.Policy { return a.life }
