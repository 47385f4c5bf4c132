package reserve

import (
	"path/filepath"
	"testing"
	"time"
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
	r := New(filepath.Join(dir, "l.db"), 1, nil, time.Now, nil)
	for b.Loop() {
		if err := r.Allow(1000); err != nil {
			b.Fatal(err)
		}
	}
}
