// Package reserve is the ledger's disk reserve: it refuses appends while
// the filesystem holding the ledger file has less free space than a
// configured minimum, so bbolt never fails half way through a write on a
// full disk, and leaves that space to the few appends that must go on
// (Use: the CA's own SVID, revocations).
package reserve

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"github.com/castellan-dev/castellan/internal/clock"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"
)

// reserveRecheck is how often the free space is measured while appends
// come in; between measurements the bytes appended are subtracted from the
// last measure (see Reserve.Allow).
const reserveRecheck = time.Second

// writeAmplification estimates the bytes bbolt writes per byte of entry
// (the entry, its tree nodes, its index keys, partly filled pages).
const writeAmplification = 4

// ErrDiskReserve: the ledger's filesystem has less free space than the
// configured reserve; appends are refused until space is freed.
var ErrDiskReserve = errors.New("ledger: disk reserve reached")

// reserveKey marks a context whose appends may use the reserve.
type reserveKey struct{}

// Use returns a context whose Appends skip the disk reserve check:
// for the few small appends the reserve is there to leave room for while
// issuance is stopped: the CA's own SVID (renewed every half agent TTL)
// and revocations (Revoke uses it). Never for workload issuance.
func Use(ctx context.Context) context.Context {
	return context.WithValue(ctx, reserveKey{}, true)
}

// Uses reports whether ctx was made by UseReserve.
func Uses(ctx context.Context) bool { v, _ := ctx.Value(reserveKey{}).(bool); return v }

// Reserve refuses appends when the ledger's filesystem has less free space
// than the configured minimum, before bbolt fails half way through a write
// on a full disk and every node loses issuance.
type Reserve struct {
	min   uint64
	free  func() (uint64, error)
	clock clock.Clock
	log   *slog.Logger
	path  string

	mu       sync.Mutex
	measured time.Time // when avail was measured
	avail    uint64    // bytes free then
	spent    uint64    // estimated bytes written since
	breached bool
}

// Config configures New; its zero value is no reserve.
type Config struct {
	// Reserve is the bytes to keep free (0: no reserve).
	Reserve uint64
	// FreeSpace returns the bytes available on the file's filesystem
	// (nil: statfs of its directory).
	FreeSpace func() (uint64, error)
	// Clock dates the measures (nil: the wall clock).
	Clock clock.Clock
	// Logger hears of failed measures and breaches (nil: discard).
	Logger *slog.Logger
}

// New returns the reserve cfg describes for the file at path, nil when
// cfg.Reserve is 0 (no reserve).
func New(path string, cfg Config) *Reserve {
	if cfg.Reserve == 0 {
		return nil
	}
	if cfg.FreeSpace == nil {
		dir := filepath.Dir(path)
		cfg.FreeSpace = func() (uint64, error) { return statfsAvail(dir) }
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Reserve{min: cfg.Reserve, free: cfg.FreeSpace, clock: clock.OrSystem(cfg.Clock), log: cfg.Logger, path: path}
}

// statfsAvail returns the bytes available to unprivileged users on the
// filesystem holding dir.
func statfsAvail(dir string) (uint64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", dir, err)
	}
	return st.Bavail * uint64(st.Bsize), nil
}

// Allow reports whether an append of about n bytes of entries leaves the
// reserve free. It measures the free space at most once per
// reserveRecheck, and again at once when the estimate (last measure minus
// what was appended since) comes near the reserve, so a flood cannot run
// past it between two measures. A failed measure is logged and allows the
// append: it says nothing about the disk being full.
func (r *Reserve) Allow(n uint64) error {
	if r == nil {
		return nil
	}
	cost := n * writeAmplification
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.clock.Now()
	if now.Sub(r.measured) >= reserveRecheck || r.avail < r.spent+cost || r.avail-r.spent-cost < 2*r.min {
		avail, err := r.free()
		if err != nil {
			r.log.Warn("cannot measure the ledger's free disk space; the reserve is not enforced", "path", r.path, "error", err.Error())
			return nil
		}
		r.measured, r.avail, r.spent = now, avail, 0
	}
	left := uint64(0)
	if r.avail > r.spent+cost {
		left = r.avail - r.spent - cost
	}
	r.setBreached(left < r.min)
	if r.breached {
		return fmt.Errorf("%w: %s free on the filesystem holding %s, under the reserve of %s; "+
			"no certificate can be logged, so none is issued: free disk space or grow the volume (issuance resumes by itself), or lower --ledger-disk-reserve",
			ErrDiskReserve, formatBytes(r.avail-min(r.avail, r.spent)), r.path, formatBytes(r.min))
	}
	r.spent += cost
	return nil
}

// setBreached logs and publishes a change of state.
func (r *Reserve) setBreached(b bool) {
	if b == r.breached {
		return
	}
	r.breached = b
	if b {
		r.log.Error("ledger disk reserve breached: appends refused, issuance stops until disk space is freed",
			"path", r.path, "free_bytes", r.avail, "reserve_bytes", r.min)
	} else {
		r.log.Info("ledger disk reserve restored: appends accepted again", "path", r.path, "free_bytes", r.avail)
	}
}

// State returns whether the reserve is breached and the free bytes last
// measured (for the metrics).
func (r *Reserve) State() (bool, uint64) {
	if r == nil {
		return false, 0
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.breached, r.avail - min(r.avail, r.spent)
}

// formatBytes writes n in binary units.
func formatBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// Collectors returns the reserve's gauges (r may be nil: no reserve).
func (r *Reserve) Collectors() []prometheus.Collector {
	return []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "castellan_ledger_disk_reserve_breached",
			Help: "1 while the ledger's filesystem has less free space than --ledger-disk-reserve and appends (issuance) are refused; alert on it.",
		}, func() float64 {
			if b, _ := r.State(); b {
				return 1
			}
			return 0
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "castellan_ledger_disk_free_bytes",
			Help: "Free bytes on the ledger's filesystem, as last measured by the disk reserve check (0 without a reserve).",
		}, func() float64 { _, f := r.State(); return float64(f) }),
	}
}
