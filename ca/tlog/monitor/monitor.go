package monitor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/castellan-dev/castellan/internal/witness"
	"github.com/transparency-dev/formats/log"
	"github.com/transparency-dev/merkle/compact"
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
	// Clock returns the current time, for cosignature timestamps
	// (nil: time.Now).
	Clock func() time.Time
}

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
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	cfg.Limits = cfg.Limits.withDefaults()
	return &Monitor{cfg: cfg, f: &fetcher{base: cfg.URL, client: cfg.Client, limits: cfg.Limits}}, nil
}

// Result is what one step verified.
type Result struct {
	// From and To delimit the entries verified, [From, To).
	From, To uint64
	// State is the new state: the checkpoint of size To.
	State *State
	// Matches are the new entries that match the filter, in log order.
	Matches []Entry
	// Pruned counts new entries whose content the server no longer
	// serves: their hashes are verified, their content was not matched.
	Pruned uint64
}

// Step verifies the log from st (nil: the empty tree) to the server's
// latest checkpoint and returns the matching new entries. Nothing in the
// result may be trusted if it returns an error.
func (m *Monitor) Step(ctx context.Context, st *State) (*Result, error) {
	signed, cp, err := m.checkpoint(ctx)
	if err != nil {
		return nil, err
	}
	old := log.Checkpoint{Origin: m.cfg.Origin, Size: 0, Hash: rfc6962.DefaultHasher.EmptyRoot()}
	if st != nil {
		old = st.Checkpoint
	}
	res := &Result{From: old.Size, To: cp.Size, State: &State{Checkpoint: *cp, Signed: signed}}
	switch {
	case cp.Size < old.Size:
		return nil, fmt.Errorf("%w: the log's checkpoint has %d entries, fewer than the %d of the saved checkpoint: the log was rolled back or replaced; the state is kept", ErrFork, cp.Size, old.Size)
	case cp.Size == old.Size && !bytes.Equal(cp.Hash, old.Hash):
		return nil, fmt.Errorf("%w: the log's checkpoint of size %d has another root than the saved one: two versions of the log exist; the state is kept", ErrFork, cp.Size)
	case cp.Size == old.Size:
		return res, nil
	}
	if err := m.extend(ctx, &old, cp, res); err != nil {
		return nil, err
	}
	return res, nil
}

// checkpoint fetches and verifies the latest checkpoint.
func (m *Monitor) checkpoint(ctx context.Context) ([]byte, *log.Checkpoint, error) {
	signed, err := m.f.get(ctx, layout.CheckpointPath, m.cfg.Limits.MaxCheckpoint)
	if err != nil {
		return nil, nil, err
	}
	if m.cfg.Policy != nil {
		v, err := m.cfg.Policy.Verify(signed, m.cfg.Origin, m.cfg.LogKey, m.cfg.Clock())
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

// extend verifies the entries [old.Size, cp.Size): the old tree's nodes
// from the tiles, extended with the hashes of the new entries, must give
// the new root, and the old nodes alone the old root.
func (m *Monitor) extend(ctx context.Context, old, cp *log.Checkpoint, res *Result) error {
	t := newTiles(m.f, cp.Size)
	rng, err := t.prefix(ctx, old.Size)
	if err != nil {
		return err
	}
	prefixRoot := rfc6962.DefaultHasher.EmptyRoot()
	if old.Size > 0 {
		if prefixRoot, err = rng.GetRootHash(nil); err != nil {
			return fmt.Errorf("monitor: %w", err)
		}
	}
	chk := newTileCheck(t)
	var bad error // the first entry that does not decode
	for ri := range layout.Range(old.Size, cp.Size-old.Size, cp.Size) {
		if err := m.fold(ctx, t, ri, rng, chk, res, &bad); err != nil {
			return err
		}
	}
	root, err := rng.GetRootHash(nil)
	if err != nil {
		return fmt.Errorf("monitor: %w", err)
	}
	if err := verdict(old, cp, prefixRoot, root); err != nil {
		return err
	}
	if err := chk.flush(ctx, true); err != nil {
		return err
	}
	if bad != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, bad)
	}
	return nil
}

// verdict compares the roots the tiles and entries produced with the
// saved and the signed roots.
func verdict(old, cp *log.Checkpoint, prefixRoot, root []byte) error {
	okOld, okNew := bytes.Equal(prefixRoot, old.Hash), bytes.Equal(root, cp.Hash)
	switch {
	case okOld && okNew:
		return nil
	case okNew:
		// The signed tree commits to a first old.Size entries whose root is
		// not the saved one.
		return fmt.Errorf("%w: the log's signed tree of size %d does not extend the saved tree of size %d (its first %d entries have another root): the log was rewritten or forked; the state is kept",
			ErrFork, cp.Size, old.Size, old.Size)
	case okOld:
		return fmt.Errorf("%w: entries %d to %d and the hash tiles do not hash to the signed root of size %d: the server serves tiles or entries that are not the log it signed",
			ErrInvalid, old.Size, cp.Size-1, cp.Size)
	}
	return fmt.Errorf("%w: the hash tiles hash neither to the saved root (size %d) nor, with the new entries, to the signed root (size %d): the server serves tiles that are not the log it signed",
		ErrInvalid, old.Size, cp.Size)
}

// fold reads the entries of one bundle range, folds their leaf hashes
// into rng, and decodes and matches them. A bundle the server has pruned
// contributes the level-0 tile's hashes instead, its content unread.
func (m *Monitor) fold(ctx context.Context, t *tiles, ri layout.RangeInfo, rng *compact.Range, chk *tileCheck, res *Result, bad *error) error {
	first := ri.Index*layout.EntryBundleWidth + uint64(ri.First)
	data, err := t.bundle(ctx, ri.Index)
	if errors.Is(err, errGone) {
		return foldPruned(ctx, t, ri, rng, chk, res)
	}
	if err != nil {
		return err
	}
	for i, d := range data[ri.First : ri.First+ri.N] {
		idx := first + uint64(i)
		if err := rng.Append(rfc6962.DefaultHasher.HashLeaf(d), chk.visit); err != nil {
			return fmt.Errorf("monitor: entry %d: %w", idx, err)
		}
		e, err := DecodeEntry(d, idx)
		if err != nil {
			if *bad == nil {
				*bad = err
			}
			continue
		}
		if m.cfg.Filter.Match(&e) {
			res.Matches = append(res.Matches, e)
		}
	}
	return chk.flush(ctx, false)
}

// foldPruned folds a pruned bundle's leaf hashes, read from its tile.
func foldPruned(ctx context.Context, t *tiles, ri layout.RangeInfo, rng *compact.Range, chk *tileCheck, res *Result) error {
	hashes, err := t.tile(ctx, 0, ri.Index)
	if err != nil {
		return err
	}
	for _, h := range hashes[ri.First : ri.First+ri.N] {
		if err := rng.Append(h, chk.visit); err != nil {
			return fmt.Errorf("monitor: %w", err)
		}
	}
	res.Pruned += uint64(ri.N)
	delete(chk.pending, [2]uint64{0, ri.Index}) // the tile itself: nothing to compare
	return nil
}
