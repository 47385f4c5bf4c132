package logcheck

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	cav1 "github.com/castellan-dev/castellan/api/castellan/ca/v1"
	"github.com/castellan-dev/castellan/internal/clock"
	"github.com/castellan-dev/castellan/internal/witness"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/transparency-dev/formats/log"
	"golang.org/x/mod/sumdb/note"
)

// Defaults applied by New to zero Config fields.
const (
	// DefaultWait bounds one Prove: the CA witnesses its log about once a
	// second, so a new certificate is normally proven within two. The
	// manager's loop waits for Prove under enforce, so the bound also
	// bounds how late a revocation pushed meanwhile is applied.
	DefaultWait = 10 * time.Second
	// DefaultPoll is the pause between two GetLogProof calls of one Prove.
	DefaultPoll = 250 * time.Millisecond
	// maxCerts bounds the certificates one GetLogProof call asks about.
	maxCerts = 500
)

// Why a certificate was not proven; test with errors.Is.
var (
	// ErrNotLogged: the CA gave the certificate no log index.
	ErrNotLogged = errors.New("the CA did not say where in its issuance log the certificate is")
	// ErrNotWitnessed: no witnessed checkpoint covering the certificate
	// was accepted within the wait.
	ErrNotWitnessed = errors.New("the certificate is not in a witnessed checkpoint yet")
	// ErrBadProof: the CA's entry or inclusion proof does not show the
	// certificate in the log.
	ErrBadProof = errors.New("the CA's proof does not show the certificate in its log")
	// ErrFork: the CA presented a witnessed checkpoint that does not
	// extend the one the agent accepted: the log forked or was rewritten.
	ErrFork = errors.New("the issuance log forked")
)

// Source is where proofs come from; *client.Client implements it.
type Source interface {
	GetLogProof(ctx context.Context, req *cav1.GetLogProofRequest) (*cav1.GetLogProofResponse, error)
}

// Store keeps the last accepted checkpoint; *cache.Cache implements it.
type Store interface {
	LogCheckpoint() ([]byte, error)
	PutLogCheckpoint(cp []byte) error
}

// Config configures a Checker. Policy, LogKey, Source and Store are
// required.
type Config struct {
	// Policy is the witness policy a checkpoint must satisfy.
	Policy *witness.Policy
	// LogKey is the log's pinned note verifier key.
	LogKey string
	// Origin is the log's origin line ("" -> LogKey's name).
	Origin string
	Source Source
	Store  Store
	// Clock is the current time (nil -> the wall clock); cosignatures
	// dated after it (plus witness.ClockSkew) are refused.
	Clock clock.Clock
	// Wait bounds one Prove (0 -> DefaultWait); Poll is the pause between
	// two attempts (0 -> DefaultPoll).
	Wait, Poll time.Duration
	Logger     *slog.Logger
	Registry   *prometheus.Registry
}

// Cert is a certificate to prove: its log index (nil if the CA gave none)
// and the leaf's DER.
type Cert struct {
	Index *uint64
	DER   []byte
}

// Checker proves certificates against the witnessed log. Safe for
// concurrent use.
type Checker struct {
	cfg     Config
	logKey  note.Verifier
	log     *slog.Logger
	metrics *metrics
	bg      sync.WaitGroup

	mu       sync.Mutex
	accepted *log.Checkpoint // nil until one is accepted
	forked   error           // sticky once a fork is seen
}

// New returns a Checker that starts from the checkpoint in cfg.Store.
func New(cfg Config) (*Checker, error) {
	if cfg.Policy == nil || cfg.LogKey == "" || cfg.Source == nil || cfg.Store == nil {
		return nil, errors.New("logcheck: a witness policy, the log key, a proof source and a store are required")
	}
	v, err := note.NewVerifier(cfg.LogKey)
	if err != nil {
		return nil, fmt.Errorf("logcheck: log key %q: %w (want the verifier key castellanctl ledger checkpoint prints)", cfg.LogKey, err)
	}
	if cfg.Origin == "" {
		cfg.Origin = v.Name()
	}
	cfg.Clock = clock.OrSystem(cfg.Clock)
	if cfg.Wait <= 0 {
		cfg.Wait = DefaultWait
	}
	if cfg.Poll <= 0 {
		cfg.Poll = DefaultPoll
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	c := &Checker{cfg: cfg, logKey: v, log: cfg.Logger}
	if c.metrics, err = newMetrics(cfg.Registry); err != nil {
		return nil, err
	}
	if err := c.loadAccepted(); err != nil {
		return nil, err
	}
	return c, nil
}

// loadAccepted reads the stored checkpoint, which must be this log's and
// signed by its key (its cosignatures were checked when it was accepted,
// perhaps under a policy since changed).
func (c *Checker) loadAccepted() error {
	stored, err := c.cfg.Store.LogCheckpoint()
	if err != nil || stored == nil {
		return err
	}
	cp, _, _, err := log.ParseCheckpoint(stored, c.cfg.Origin, c.logKey)
	if err != nil {
		return fmt.Errorf("logcheck: the stored log checkpoint does not verify with log key %s (was --log-key or --log-origin changed?): %w", c.logKey.Name(), err)
	}
	c.accepted = cp
	c.metrics.size.Set(float64(cp.Size))
	c.log.Info("issuance log: resuming from the accepted checkpoint", "size", cp.Size)
	return nil
}

// Accepted returns the size of the accepted checkpoint (0 if none).
func (c *Checker) Accepted() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.accepted == nil {
		return 0
	}
	return c.accepted.Size
}

// Wait waits for the background checks Monitor started.
func (c *Checker) Wait() { c.bg.Wait() }
