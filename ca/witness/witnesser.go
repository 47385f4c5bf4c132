package witness

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

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

// WitnesserOptions configures a Witnesser.
type WitnesserOptions struct {
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
	// Clock returns the current time (nil -> time.Now).
	Clock func() time.Time
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
	opts   WitnesserOptions

	round  sync.Mutex // one round at a time
	mu     sync.Mutex
	latest []byte
	size   uint64
	at     time.Time // when latest was witnessed (zero: before this process)
	gauges *witnessedGauges
}

// NewWitnesser returns a Witnesser of l through c.
func NewWitnesser(c *Client, l Log, opts WitnesserOptions) *Witnesser {
	if opts.Interval <= 0 {
		opts.Interval = time.Second
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = time.Minute
	}
	if opts.Clock == nil {
		opts.Clock = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	w := &Witnesser{client: c, log: l, opts: opts, gauges: newWitnessedGauges(opts.Registry)}
	if size, ok := checkpointSize(opts.Latest); ok {
		w.latest, w.size = opts.Latest, size
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
	fresh := w.opts.Refresh <= 0 || (!at.IsZero() && w.opts.Clock().Sub(at) < w.opts.Refresh)
	if latest != nil && (size < old || size == old && fresh) {
		return latest, nil
	}
	cosigned, err := w.client.Submit(ctx, cp, old, w.log.ConsistencyProof)
	if err != nil {
		return nil, err
	}
	if w.opts.OnWitnessed != nil {
		if err := w.opts.OnWitnessed(ctx, cosigned); err != nil {
			return nil, fmt.Errorf("witness: publish the witnessed checkpoint of size %d: %w", size, err)
		}
	}
	now := w.opts.Clock()
	w.mu.Lock()
	w.latest, w.size, w.at = cosigned, size, now
	w.mu.Unlock()
	w.gauges.set(size, now)
	return cosigned, nil
}

// Run runs rounds every Interval until ctx ends, waiting up to MaxBackoff
// after failures, which it logs (a fork at Error level).
func (w *Witnesser) Run(ctx context.Context) error {
	wait := w.opts.Interval
	for {
		if _, err := w.Witness(ctx); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			w.opts.Logger.Log(ctx, slogLevel(err), "witnessing failed; retrying", "error", err.Error(), "retry_in", wait.String())
			wait = min(2*wait, w.opts.MaxBackoff)
		} else {
			wait = w.opts.Interval
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
