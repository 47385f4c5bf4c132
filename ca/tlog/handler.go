package tlog

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/ca/ledger/tree"
	"github.com/castellan-dev/castellan/internal/clock"
)

// Log is what Handler serves; *ledger.Ledger implements it.
type Log interface {
	// Checkpoint signs (if the log grew) and returns a checkpoint of the
	// current tree.
	Checkpoint(ctx context.Context) ([]byte, error)
	// StoredCheckpoint returns the latest signed checkpoint, nil if none.
	StoredCheckpoint() []byte
	// NodeHashes returns the hashes of complete tree nodes [from, from+n)
	// at a tree level; ledger.ErrNotFound if any is not complete.
	NodeHashes(level uint8, from, n uint64) ([][]byte, error)
	// EntryData returns the leaf data of entries [from, from+n);
	// ledger.ErrNotFound beyond the log, tree.ErrPruned for a pruned one.
	EntryData(from, n uint64) ([][]byte, error)
}

// Cache-Control values. Full tiles and bundles never change. A partial
// tile's content never changes either, but it is superseded by the full
// tile, so caches keep it briefly; the checkpoint changes with every
// issuance.
const (
	cacheFull       = "public, max-age=31536000, immutable"
	cachePartial    = "public, max-age=60"
	cacheCheckpoint = "no-cache"
)

// DefaultMaxInFlight bounds the requests a Handler serves at once.
const DefaultMaxInFlight = 16

// DefaultCheckpointInterval is the least time between two checkpoints a
// Handler has signed on request.
const DefaultCheckpointInterval = time.Second

// errNotWitnessed: a witness policy is set and nothing is cosigned yet.
var errNotWitnessed = errors.New("tlog: no witnessed checkpoint yet")

// maxEntrySize is the largest entry a bundle can hold (2-byte length).
const maxEntrySize = 1<<16 - 1

// Handler serves a log in the C2SP tlog-tiles layout. Mount it with its
// prefix stripped (http.StripPrefix("/log", h)) so that it sees
// "/checkpoint", "/tile/0/000", ... Every request reads at most one tile
// (256 hashes) or one bundle (256 entries), and at most MaxInFlight run at
// once; others wait for a slot or their request's context. A checkpoint
// request signs a new checkpoint of a grown log at most once per
// CheckpointInterval and otherwise serves the latest one, so polling
// clients cannot turn reads into a stream of signatures and disk writes.
// Safe for concurrent use.
type Handler struct {
	log       Log
	slots     chan struct{}
	errs      *slog.Logger
	clock     clock.Clock
	interval  time.Duration
	witnessed func() []byte

	cpMu       sync.Mutex // one checkpoint signing at a time
	lastSigned time.Time  // when this Handler last called Log.Checkpoint
}

// Config holds the settings of a Handler; its zero value is the default.
type Config struct {
	// MaxInFlight bounds concurrent requests (0 -> DefaultMaxInFlight).
	MaxInFlight int
	// Logger receives server-side failures (nil -> discard).
	Logger *slog.Logger
	// Clock times checkpoint signing (nil -> the wall clock).
	Clock clock.Clock
	// CheckpointInterval is the least time between two checkpoints signed
	// on request (0 -> DefaultCheckpointInterval).
	CheckpointInterval time.Duration
	// Witnessed, when set (the CA has a witness policy), returns the
	// latest checkpoint cosigned by the policy's witnesses, nil if none
	// yet: /checkpoint then serves it (with its cosignature lines) instead
	// of signing one, and 503 until the first one.
	Witnessed func() []byte
}

// NewHandler returns a Handler serving l.
func NewHandler(l Log, cfg Config) *Handler {
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = DefaultMaxInFlight
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.CheckpointInterval <= 0 {
		cfg.CheckpointInterval = DefaultCheckpointInterval
	}
	return &Handler{log: l, slots: make(chan struct{}, cfg.MaxInFlight), errs: cfg.Logger,
		clock: clock.OrSystem(cfg.Clock), interval: cfg.CheckpointInterval, witnessed: cfg.Witnessed}
}

// ServeHTTP serves GET and HEAD of the checkpoint, hash tiles and entry
// bundles.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		h.fail(w, http.StatusMethodNotAllowed, "tlog: only GET and HEAD are served")
		return
	}
	res, err := ParsePath(strings.TrimPrefix(r.URL.Path, "/"))
	if err != nil {
		status := http.StatusNotFound
		if strings.HasPrefix(r.URL.Path, "/tile/") {
			status = http.StatusBadRequest
		}
		h.fail(w, status, err.Error())
		return
	}
	select {
	case h.slots <- struct{}{}:
		defer func() { <-h.slots }()
	case <-r.Context().Done():
		h.fail(w, http.StatusServiceUnavailable, "tlog: busy; retry later")
		return
	}
	body, err := h.read(r.Context(), res)
	if err != nil {
		h.failRead(w, res, err)
		return
	}
	h.write(w, res, body)
}

// read produces the body of res.
func (h *Handler) read(ctx context.Context, res Resource) ([]byte, error) {
	switch {
	case res.Checkpoint:
		return h.checkpoint(ctx)
	case res.Entries:
		return h.bundle(res)
	default:
		return h.tile(res)
	}
}

// checkpoint returns a fresh checkpoint if none was signed here in the
// last interval, else the latest stored one.
func (h *Handler) checkpoint(ctx context.Context) ([]byte, error) {
	if h.witnessed != nil {
		if cp := h.witnessed(); cp != nil {
			return cp, nil
		}
		return nil, errNotWitnessed
	}
	h.cpMu.Lock()
	defer h.cpMu.Unlock()
	now := h.clock.Now()
	if !h.lastSigned.IsZero() && now.Sub(h.lastSigned) < h.interval && !now.Before(h.lastSigned) {
		if cp := h.log.StoredCheckpoint(); cp != nil {
			return cp, nil
		}
	}
	cp, err := h.log.Checkpoint(ctx)
	if err == nil {
		h.lastSigned = now
	}
	return cp, err
}

// tile returns the hashes of a tile: the nodes at tree level 8*L with
// indices N*256 to N*256+W-1, concatenated.
func (h *Handler) tile(res Resource) ([]byte, error) {
	first, ok := firstIndex(res)
	if !ok || int(res.Level)*TileHeight > 63 {
		return nil, fmt.Errorf("%w: tile %s is beyond any log", entry.ErrNotFound, res)
	}
	hashes, err := h.log.NodeHashes(uint8(int(res.Level)*TileHeight), first, uint64(res.Width))
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, len(hashes)*32)
	for _, hash := range hashes {
		out = append(out, hash...)
	}
	return out, nil
}

// bundle returns an entry bundle: each entry of N*256 to N*256+W-1 as a
// 2-byte big-endian length and the entry's leaf data.
func (h *Handler) bundle(res Resource) ([]byte, error) {
	first, ok := firstIndex(res)
	if !ok {
		return nil, fmt.Errorf("%w: bundle %s is beyond any log", entry.ErrNotFound, res)
	}
	entries, err := h.log.EntryData(first, uint64(res.Width))
	if err != nil {
		return nil, err
	}
	var out []byte
	for i, e := range entries {
		if len(e) > maxEntrySize {
			return nil, fmt.Errorf("tlog: entry %d has %d bytes, more than a bundle can hold", first+uint64(i), len(e))
		}
		out = binary.BigEndian.AppendUint16(out, uint16(len(e)))
		out = append(out, e...)
	}
	return out, nil
}

// firstIndex returns the index of the first node or entry of res, false if
// it overflows.
func firstIndex(res Resource) (uint64, bool) {
	if res.Index > (^uint64(0))>>TileHeight {
		return 0, false
	}
	return res.Index << TileHeight, true
}

// write sends a successful response.
func (h *Handler) write(w http.ResponseWriter, res Resource, body []byte) {
	hdr := w.Header()
	switch {
	case res.Checkpoint:
		hdr.Set("Content-Type", "text/plain; charset=utf-8")
		hdr.Set("Cache-Control", cacheCheckpoint)
	case res.Partial():
		hdr.Set("Content-Type", "application/octet-stream")
		hdr.Set("Cache-Control", cachePartial)
	default:
		hdr.Set("Content-Type", "application/octet-stream")
		hdr.Set("Cache-Control", cacheFull)
	}
	hdr.Set("X-Content-Type-Options", "nosniff")
	_, _ = w.Write(body)
}

// failRead maps a read error to a status.
func (h *Handler) failRead(w http.ResponseWriter, res Resource, err error) {
	switch {
	case errors.Is(err, entry.ErrNotFound):
		h.fail(w, http.StatusNotFound, fmt.Sprintf("tlog: %s is not in the log yet: %v", res, err))
	case errors.Is(err, tree.ErrPruned):
		h.fail(w, http.StatusGone, fmt.Sprintf("tlog: %s cannot be served: %v; the hash tiles still prove every leaf", res, err))
	case errors.Is(err, errNotWitnessed):
		w.Header().Set("Retry-After", "5")
		h.fail(w, http.StatusServiceUnavailable, "tlog: no checkpoint is cosigned by the witness policy yet; retry later (the server's log says why witnessing fails)")
	case errors.Is(err, entry.ErrClosed), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		h.fail(w, http.StatusServiceUnavailable, "tlog: the log is not available; retry later")
	default:
		h.errs.Error("tlog: serving failed", "resource", res.String(), "error", err)
		h.fail(w, http.StatusInternalServerError, fmt.Sprintf("tlog: %s could not be read; the server log says why", res))
	}
}

// fail sends an error response with a plain-text reason.
func (h *Handler) fail(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Cache-Control", "no-store")
	http.Error(w, msg, status)
}
