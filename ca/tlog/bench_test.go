package tlog

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// BenchmarkServe measures one request for the largest resources: a full
// hash tile (256 stored hashes) and a full entry bundle (256 entries, each
// re-hashed against its leaf hash), read from a real ledger file.
func BenchmarkServe(b *testing.B) {
	for _, path := range []string{"/tile/0/001", "/tile/entries/001", "/checkpoint"} {
		b.Run(path, func(b *testing.B) {
			tl := newTestLog(b)
			tl.issue(b, 600, time.Hour)
			h := NewHandler(tl.l, Config{Clock: tl.clock})
			req := httptest.NewRequest(http.MethodGet, path, nil)
			b.ReportAllocs()
			for b.Loop() {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				if rec.Code != http.StatusOK {
					b.Fatalf("GET %s: %d", path, rec.Code)
				}
			}
		})
	}
}
