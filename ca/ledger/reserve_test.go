package ledger

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/ca/ledger/reserve"
	"github.com/castellan-dev/castellan/internal/clock/clocktest"
)

const mib = 1 << 20

// fakeDisk is a filesystem whose free space the test sets.
type fakeDisk struct {
	free  atomic.Uint64
	calls atomic.Int64
	fail  atomic.Bool
}

func (d *fakeDisk) FreeSpace() (uint64, error) {
	d.calls.Add(1)
	if d.fail.Load() {
		return 0, errors.New("statfs: input/output error")
	}
	return d.free.Load(), nil
}

func openReserved(t *testing.T, clock *fakeClock, disk *fakeDisk, reserve uint64) (*Ledger, string, *prometheus.Registry) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ledger.db")
	reg := prometheus.NewRegistry()
	l, err := Open(path, Config{Clock: clocktest.Func(clock.Now), DiskReserve: reserve, FreeSpace: disk.FreeSpace, Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l, path, reg
}

func TestAppendRefusedBelowDiskReserve(t *testing.T) {
	clock := newFakeClock()
	disk := &fakeDisk{}
	disk.free.Store(1024 * mib)
	l, path, reg := openReserved(t, clock, disk, 512*mib)
	ctx := context.Background()
	ev := func(n int) entry.Event { return certEvent(n, "spiffe://td/ns/a/sa/b", "n", clock.Now().Add(time.Hour)) }
	if _, err := l.Append(ctx, ev(1)); err != nil {
		t.Fatalf("with 1 GiB free: %v", err)
	}
	disk.free.Store(100 * mib)
	clock.Advance(2 * time.Second)
	_, err := l.Append(ctx, ev(2))
	if !errors.Is(err, reserve.ErrDiskReserve) {
		t.Fatalf("with 100 MiB free and a 512 MiB reserve: %v, want reserve.ErrDiskReserve", err)
	}
	for _, want := range []string{path, "100.0 MiB free", "reserve of 512.0 MiB", "free disk space"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if g := gauge(t, reg, "castellan_ledger_disk_reserve_breached"); g != 1 {
		t.Errorf("castellan_ledger_disk_reserve_breached = %v, want 1", g)
	}
	if l.Size() != 1 {
		t.Fatalf("Size = %d; the refused event was logged", l.Size())
	}
	// Space freed: appends resume by themselves.
	disk.free.Store(2048 * mib)
	clock.Advance(2 * time.Second)
	if _, err := l.Append(ctx, ev(3)); err != nil {
		t.Fatalf("after space was freed: %v", err)
	}
	if g := gauge(t, reg, "castellan_ledger_disk_reserve_breached"); g != 0 {
		t.Errorf("castellan_ledger_disk_reserve_breached = %v after recovery, want 0", g)
	}
}

// Far from the reserve, the free space is measured once per second, not
// once per append; near it, every append measures.
func TestDiskReserveMeasuresCheaply(t *testing.T) {
	clock := newFakeClock()
	disk := &fakeDisk{}
	disk.free.Store(100_000 * mib)
	l, _, _ := openReserved(t, clock, disk, 512*mib)
	fill(t, l, 2000, clock.Now().Add(time.Hour)) // 4 appends of 500
	for i := range 50 {
		if _, err := l.Append(context.Background(), certEvent(5000+i, "spiffe://td/x", "n", clock.Now().Add(time.Hour))); err != nil {
			t.Fatal(err)
		}
	}
	if n := disk.calls.Load(); n != 1 {
		t.Fatalf("free space measured %d times in one second far from the reserve, want 1", n)
	}
	disk.free.Store(600 * mib) // within 2x the reserve
	clock.Advance(2 * time.Second)
	before := disk.calls.Load()
	for i := range 5 {
		_, _ = l.Append(context.Background(), certEvent(6000+i, "spiffe://td/x", "n", clock.Now().Add(time.Hour)))
	}
	if n := disk.calls.Load() - before; n != 5 {
		t.Fatalf("near the reserve, %d measures for 5 appends, want 5", n)
	}
}

// An append is charged its estimated size before it is written: one that
// would eat into the reserve is refused though the free space measured
// just before is above it.
func TestDiskReserveChargesTheAppendItself(t *testing.T) {
	clock := newFakeClock()
	disk := &fakeDisk{}
	disk.free.Store(40 * mib)
	l, _, _ := openReserved(t, clock, disk, 8*mib)
	big := certEvent(1, "spiffe://td/x", "n", clock.Now().Add(time.Hour))
	big.CertDER = make([]byte, 2*mib) // about 8 MiB written
	if _, err := l.Append(context.Background(), big); err != nil {
		t.Fatalf("first 2 MiB append with 40 MiB free: %v", err)
	}
	big.Serial = "ab"
	big.CertDER = make([]byte, 8*mib) // about 32 MiB: would leave under 8
	if _, err := l.Append(context.Background(), big); !errors.Is(err, reserve.ErrDiskReserve) {
		t.Fatalf("an append that would cross the reserve: %v", err)
	}
}

// A failed measure is logged and does not stop issuance: it says nothing
// about the disk being full.
func TestDiskReserveMeasureFailureAllows(t *testing.T) {
	clock := newFakeClock()
	disk := &fakeDisk{}
	disk.fail.Store(true)
	l, _, _ := openReserved(t, clock, disk, 512*mib)
	if _, err := l.Append(context.Background(), certEvent(1, "spiffe://td/x", "n", clock.Now().Add(time.Hour))); err != nil {
		t.Fatal(err)
	}
}

func gauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("metric %s not registered", name)
	return 0
}

// The CA's own SVID is logged from the reserve: without it a breached
// reserve would also take the CA's TLS identity down.
func TestUseReserveAppendsBelowTheReserve(t *testing.T) {
	clock := newFakeClock()
	disk := &fakeDisk{}
	disk.free.Store(10 * mib)
	l, _, _ := openReserved(t, clock, disk, 512*mib)
	ev := certEvent(1, "spiffe://td/castellan/server", "", clock.Now().Add(time.Hour))
	if _, err := l.Append(context.Background(), ev); !errors.Is(err, reserve.ErrDiskReserve) {
		t.Fatalf("plain Append below the reserve: %v", err)
	}
	if _, err := l.Append(reserve.Use(context.Background()), ev); err != nil {
		t.Fatalf("Append with UseReserve: %v", err)
	}
}

// An operator can revoke while the reserve stops issuance.
func TestRevokeBelowTheReserve(t *testing.T) {
	clock := newFakeClock()
	disk := &fakeDisk{}
	disk.free.Store(1024 * mib)
	l, _, _ := openReserved(t, clock, disk, 512*mib)
	ev := certEvent(1, "spiffe://td/ns/a/sa/b", "n", clock.Now().Add(time.Hour))
	if _, err := l.Append(context.Background(), ev); err != nil {
		t.Fatal(err)
	}
	disk.free.Store(mib)
	clock.Advance(2 * time.Second)
	if _, err := l.Revoke(context.Background(), ev.Serial, "key compromise"); err != nil {
		t.Fatalf("Revoke below the reserve: %v", err)
	}
}
