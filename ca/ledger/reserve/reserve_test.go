package reserve

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/internal/clock/clocktest"
)

// BenchmarkStatfs is the cost of one free-space measure (a statfs call).
func BenchmarkStatfs(b *testing.B) {
	dir := b.TempDir()
	for b.Loop() {
		if _, err := statfsAvail(dir); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReserveAllow is the per-append cost of the reserve check far
// from the reserve (measures at most once per second).
func BenchmarkReserveAllow(b *testing.B) {
	dir := b.TempDir()
	r := New(filepath.Join(dir, "l.db"), Config{Reserve: 1})
	for b.Loop() {
		if err := r.Allow(1000); err != nil {
			b.Fatal(err)
		}
	}
}

// TestAllowRefusesBelowTheReserveAndRecovers: an append that would leave
// less than the reserve is refused with ErrDiskReserve naming the file;
// once space is freed (and re-measured) appends are allowed again; a
// failed measure allows (it says nothing about a full disk).
func TestAllowRefusesBelowTheReserveAndRecovers(t *testing.T) {
	const mib = 1 << 20
	free, now := uint64(10*mib), time.Unix(0, 0)
	var measureErr error
	r := New("/data/ledger.db", Config{Reserve: 4 * mib, FreeSpace: func() (uint64, error) { return free, measureErr },
		Clock: clocktest.Func(func() time.Time { return now })})
	if err := r.Allow(mib); err != nil {
		t.Fatalf("10 MiB free, 4 MiB reserve, small append: %v", err)
	}
	free = 3 * mib
	now = now.Add(2 * time.Second)
	if err := r.Allow(1); !errors.Is(err, ErrDiskReserve) || !strings.Contains(err.Error(), "/data/ledger.db") {
		t.Fatalf("3 MiB free: %v, want ErrDiskReserve naming the file", err)
	}
	if b, _ := r.State(); !b {
		t.Fatal("State does not report the breach")
	}
	free = 100 * mib
	now = now.Add(2 * time.Second)
	if err := r.Allow(1); err != nil {
		t.Fatalf("after space was freed: %v", err)
	}
	measureErr = errors.New("statfs: input/output error")
	free = 0
	now = now.Add(2 * time.Second)
	if err := r.Allow(1); err != nil {
		t.Fatalf("failed measure: %v, want allowed", err)
	}
	var none *Reserve
	if err := none.Allow(1 << 40); err != nil || New("x", Config{}) != nil {
		t.Fatal("no reserve must allow everything")
	}
}

// TestUse: only a context made by Use skips the reserve.
func TestUse(t *testing.T) {
	if Uses(context.Background()) || !Uses(Use(context.Background())) {
		t.Fatal("Uses does not tell Use's contexts from others")
	}
}
