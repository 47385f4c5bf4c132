package monitor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/castellan-dev/castellan/internal/clock"

	"github.com/castellan-dev/castellan/ca/tlog/logentry"
	"github.com/castellan-dev/castellan/ca/tlog/monitor/state"
	"github.com/castellan-dev/castellan/internal/witness"
	"github.com/transparency-dev/formats/log"
	"github.com/transparency-dev/merkle/rfc6962"
	"github.com/transparency-dev/tessera/api/layout"
	"golang.org/x/mod/sumdb/note"
)

// Config configures a Monitor.
type Config struct {
	// URL is the log's prefix, e.g. http://ca.example:9090/log/.
	URL *url.URL
	// LogKey is the log's pinned note verifier key.
	LogKey note.Verifier
	// Origin is the log's origin line ("": the key's name).
	Origin string
	// Policy, when set, also requires a quorum of its witnesses to have
	// cosigned each checkpoint.
	Policy *witness.Policy
	// Filter selects the entries reported.
	Filter Filter
	// Client makes the HTTP requests (nil: a new client).
	Client *http.Client
	// Limits bounds responses.
	Limits Limits
	// Clock returns the current time, for cosignature timestamps and
	// pruning (nil: time.Now).
	Clock clock.Clock
	// Retention is how long after a certificate expires the CA may prune
	// its entry (0: DefaultRetention, the ledger's). An entry bundle
	// answered as pruned is refused when an entry before it is younger
	// than that: no later entry can have expired so long ago.
	Retention time.Duration
}

// DefaultRetention is the CA ledger's retention period.
const DefaultRetention = 30 * 24 * time.Hour

// pruneSlack absorbs clock differences between the CA and the monitor
// when judging whether an entry may have been pruned.
const pruneSlack = time.Hour

// Monitor verifies a log step by step. Safe for use by one goroutine.
type Monitor struct {
	cfg Config
	f   *fetcher
}

// New returns a Monitor, refusing a configuration without URL or key.
func New(cfg Config) (*Monitor, error) {
	if cfg.URL == nil || (cfg.URL.Scheme != "http" && cfg.URL.Scheme != "https") || cfg.URL.Host == "" {
		return nil, errors.New("monitor: the log URL must be an http:// or https:// URL, e.g. http://ca:9090/log/")
	}
	if cfg.LogKey == nil {
		return nil, errors.New("monitor: no log key; pin the log's verifier key")
	}
	if cfg.Origin == "" {
		cfg.Origin = cfg.LogKey.Name()
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{}
	}
	cfg.Clock = clock.OrSystem(cfg.Clock)
	if cfg.Retention <= 0 {
		cfg.Retention = DefaultRetention
	}
	cfg.Limits = cfg.Limits.withDefaults()
	return &Monitor{cfg: cfg, f: &fetcher{base: cfg.URL, client: cfg.Client, limits: cfg.Limits}}, nil
}

// Result is what one step verified.
type Result struct {
	// From and To delimit the entries verified, [From, To).
	From, To uint64
	// State is the new state: the checkpoint of size To.
	State *state.State
	// Matched counts the new entries that matched the filter.
	Matched int
	// Pruned counts new entries whose content the server no longer
	// serves: their hashes are verified, their content was not matched.
	Pruned uint64
}

// ChunkEntries is the most entries a step verifies before it hands their
// matches on, so that a step over millions of entries holds at most this
// many in memory.
const ChunkEntries = 16 * 256

// Step verifies the log from st (nil: the empty tree) to the server's
// latest checkpoint. It checks the new entries in chunks of at most
// ChunkEntries and passes each chunk's matching entries, in log order, to
// emit once the chunk is proven to be in the signed tree and that tree to
// extend st; an error from emit ends the step. When Step fails, the
// matches it emitted before are still genuine, but the step is not done:
// the state must not advance, and the next step emits them again.
func (m *Monitor) Step(ctx context.Context, st *state.State, emit func([]logentry.Entry) error) (*Result, error) {
	signed, cp, err := m.checkpoint(ctx)
	if err != nil {
		return nil, err
	}
	old := log.Checkpoint{Origin: m.cfg.Origin, Size: 0, Hash: rfc6962.DefaultHasher.EmptyRoot()}
	var newest time.Time
	if st != nil {
		old, newest = st.Checkpoint, st.Newest
	}
	res := &Result{From: old.Size, To: cp.Size, State: &state.State{Checkpoint: *cp, Signed: signed, Newest: newest}}
	switch {
	case cp.Size < old.Size:
		return nil, fmt.Errorf("%w: the log's checkpoint has %d entries, fewer than the %d of the saved checkpoint: the log was rolled back or replaced; the state is kept", ErrFork, cp.Size, old.Size)
	case cp.Size == old.Size && !bytes.Equal(cp.Hash, old.Hash):
		return nil, fmt.Errorf("%w: the log's checkpoint of size %d has another root than the saved one: two versions of the log exist; the state is kept", ErrFork, cp.Size)
	case cp.Size == old.Size:
		return res, nil
	}
	p := &pass{m: m, t: newTiles(m.f, cp.Size), old: &old, cp: cp, res: res, emit: emit, newest: newest}
	if err := p.run(ctx); err != nil {
		return nil, err
	}
	res.State.Newest = p.newest
	return res, nil
}

// checkpoint fetches and verifies the latest checkpoint.
func (m *Monitor) checkpoint(ctx context.Context) ([]byte, *log.Checkpoint, error) {
	signed, err := m.f.get(ctx, layout.CheckpointPath, m.cfg.Limits.MaxCheckpoint)
	if err != nil {
		return nil, nil, err
	}
	if m.cfg.Policy != nil {
		v, err := m.cfg.Policy.Verify(signed, m.cfg.Origin, m.cfg.LogKey, m.cfg.Clock.Now())
		if err != nil {
			return nil, nil, fmt.Errorf("%w: the log's checkpoint is refused: %w", ErrInvalid, err)
		}
		return signed, &v.Checkpoint, nil
	}
	cp, _, _, err := log.ParseCheckpoint(signed, m.cfg.Origin, m.cfg.LogKey)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: the log's checkpoint does not verify with the log key %s for origin %q: %w", ErrInvalid, m.cfg.LogKey.Name(), m.cfg.Origin, witness.DescribeOpenError(err))
	}
	return signed, cp, nil
}
