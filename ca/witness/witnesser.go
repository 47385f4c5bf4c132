package witness

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/castellan-dev/castellan/internal/clock"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/transparency-dev/formats/log"
)

// Log is the log a Witnesser keeps witnessed; *ledger.Ledger implements it.
type Log interface {
	// Checkpoint signs (if the log grew) and returns a checkpoint of the
	// current tree.
	Checkpoint(ctx context.Context) ([]byte, error)
	// ConsistencyProof proves that the tree of size1 is a prefix of the
	// tree of size2.
	ConsistencyProof(size1, size2 uint64) ([][]byte, error)
}

// WitnesserConfig holds the settings of a Witnesser; its zero value is the
// default.
type WitnesserConfig struct {
	// Latest is the last witnessed checkpoint, as persisted by
	// OnWitnessed before a restart (nil: none). Its size is the old size
	// offered to witnesses; it is served by Latest until a newer one.
	Latest []byte
	// OnWitnessed persists and publishes a newly witnessed checkpoint; an
	// error fails the round (nil: keep it in memory only).
	OnWitnessed func(ctx context.Context, cosigned []byte) error
	// Interval is the least time between two rounds (0 -> 1s).
	Interval time.Duration
	// MaxBackoff bounds the wait after failed rounds, which doubles from
	// Interval (0 -> 1 minute).
	MaxBackoff time.Duration
	// Refresh resubmits an unchanged checkpoint once its witnessing is
	// this old, for a fresh timestamp (0: never).
	Refresh time.Duration
	// Clock dates witnessings for Refresh and the witnessed-time gauge
	// (nil -> the wall clock); rounds are paced by the wall clock.
	Clock clock.Clock
	// Logger receives failed rounds (nil -> discard).
	Logger *slog.Logger
	// Registry, when set, receives the witnessed size and time gauges.
	Registry *prometheus.Registry
}

// Witnesser keeps a log witnessed: each round signs a checkpoint of the
// log and, when the log grew past the last witnessed checkpoint (or that
// one is older than Refresh), submits it with the consistency proof from
// the last witnessed size and publishes the cosigned checkpoint. Safe for
// concurrent use; rounds never overlap.
type Witnesser struct {
	client *Client
	log    Log
	cfg    WitnesserConfig

	round  sync.Mutex // one round at a time
	mu     sync.Mutex
	latest []byte
	size   uint64
	at     time.Time // when latest was witnessed (zero: before this process)
	gauges *witnessedGauges
}

// NewWitnesser returns a Witnesser of l through c.
func NewWitnesser(c *Client, l Log, cfg WitnesserConfig) *Witnesser {
	if cfg.Interval <= 0 {
		cfg.Interval = time.Second
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = time.Minute
	}
	cfg.Clock = clock.OrSystem(cfg.Clock)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	w := &Witnesser{client: c, log: l, cfg: cfg, gauges: newWitnessedGauges(cfg.Registry)}
	if size, ok := checkpointSize(cfg.Latest); ok {
		w.latest, w.size = cfg.Latest, size
		w.gauges.set(size, time.Time{})
	}
	return w
}

// Latest returns the last witnessed checkpoint (nil if none).
func (w *Witnesser) Latest() []byte {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.latest
}

// Witness runs one round and returns the latest witnessed checkpoint.
func (w *Witnesser) Witness(ctx context.Context) ([]byte, error) {
	w.round.Lock()
	defer w.round.Unlock()
	cp, err := w.log.Checkpoint(ctx)
	if err != nil {
		return nil, fmt.Errorf("witness: sign a checkpoint: %w", err)
	}
	size, ok := checkpointSize(cp)
	if !ok {
		return nil, fmt.Errorf("witness: the log signed a malformed checkpoint")
	}
	w.mu.Lock()
	latest, old, at := w.latest, w.size, w.at
	w.mu.Unlock()
	fresh := w.cfg.Refresh <= 0 || (!at.IsZero() && w.cfg.Clock.Now().Sub(at) < w.cfg.Refresh)
	if latest != nil && (size < old || size == old && fresh) {
		return latest, nil
	}
	cosigned, err := w.client.Submit(ctx, cp, old, w.log.ConsistencyProof)
	if err != nil {
		return nil, err
	}
	if w.cfg.OnWitnessed != nil {
		if err := w.cfg.OnWitnessed(ctx, cosigned); err != nil {
			return nil, fmt.Errorf("witness: publish the witnessed checkpoint of size %d: %w", size, err)
		}
	}
	now := w.cfg.Clock.Now()
	w.mu.Lock()
	w.latest, w.size, w.at = cosigned, size, now
	w.mu.Unlock()
	w.gauges.set(size, now)
	return cosigned, nil
}

// Run runs rounds every Interval until ctx ends, waiting up to MaxBackoff
// after failures, which it logs (a fork at Error level).
func (w *Witnesser) Run(ctx context.Context) error {
	wait := w.cfg.Interval
	for {
		if _, err := w.Witness(ctx); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			w.cfg.Logger.Log(ctx, slogLevel(err), "witnessing failed; retrying", "error", err.Error(), "retry_in", wait.String())
			wait = min(2*wait, w.cfg.MaxBackoff)
		} else {
			wait = w.cfg.Interval
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// checkpointSize reads the tree size of a checkpoint note, unverified.
func checkpointSize(signed []byte) (uint64, bool) {
	if len(signed) == 0 {
		return 0, false
	}
	i := bytes.Index(signed, []byte("\n\n"))
	if i < 0 {
		return 0, false
	}
	var cp log.Checkpoint
	if _, err := cp.Unmarshal(signed[:i+1]); err != nil {
		return 0, false
	}
	return cp.Size, true
}

// witnessedGauges are a Witnesser's metrics; nil records nothing.
type witnessedGauges struct {
	size, time prometheus.Gauge
}

func newWitnessedGauges(reg *prometheus.Registry) *witnessedGauges {
	if reg == nil {
		return nil
	}
	g := &witnessedGauges{
		size: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "castellan_witness_witnessed_size",
			Help: "Tree size of the latest checkpoint cosigned by a quorum of the witness policy.",
		}),
		time: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "castellan_witness_witnessed_timestamp_seconds",
			Help: "When this process last obtained a quorum of cosignatures (Unix seconds); alert when it stops advancing while the log grows.",
		}),
	}
	reg.MustRegister(g.size, g.time)
	return g
}

func (g *witnessedGauges) set(size uint64, at time.Time) {
	if g == nil {
		return
	}
	g.size.Set(float64(size))
	if !at.IsZero() {
		g.time.Set(float64(at.Unix()))
	}
}
