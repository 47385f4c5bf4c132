package manager

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/agent/cache"
	"github.com/castellan-dev/castellan/agent/client/catest"
	"github.com/castellan-dev/castellan/agent/state"
	"github.com/castellan-dev/castellan/agent/upstream"
	"github.com/castellan-dev/castellan/internal/procstat"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// unusedCA is a CA the benchmark never calls.
type unusedCA struct{}

func (unusedCA) Sync(context.Context, func(upstream.State)) error {
	return errors.New("unusedCA: not called")
}

func (unusedCA) Sign(context.Context, []upstream.Entry) ([]upstream.Signed, error) {
	return nil, errors.New("unusedCA: not called")
}

// BenchmarkAcceptBatch100 measures the agent's checks of one batch of
// 100 new SVIDs as the CA returns them (key match, SPIFFE ID, chain
// against the trust bundle, expiry, rotation time): the per-SVID work of
// a renewal besides the key, the CSR and the call.
func BenchmarkAcceptBatch100(b *testing.B) {
	ca := catest.New(b, td)
	c, err := cache.Open(filepath.Join(b.TempDir(), "cache.db"), cache.Config{})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	m, err := New(Config{CA: unusedCA{}, Cache: c, Store: state.NewStore(), TrustDomain: td})
	if err != nil {
		b.Fatal(err)
	}
	m.setBundle(ca.Bundle())
	const n = 100
	keys := make([]string, n)
	results := make([]upstream.Signed, n)
	for i := range n {
		id := spiffeid.RequireFromPath(td, fmt.Sprintf("/ns/bench/sa/sa-%03d", i))
		keys[i] = fmt.Sprintf("entry-%03d", i)
		m.ids[keys[i]] = &identity{entry: upstream.Entry{ID: keys[i], SPIFFEID: id}, rec: cache.Record{EntryID: keys[i]}}
		results[i] = upstream.Signed{SVID: ca.Issue(b, id, time.Hour)}
	}
	b.ReportAllocs()
	cpu0 := processCPU(b)
	start := time.Now()
	for b.Loop() {
		if stored, _ := m.accept(keys, results); len(stored) != n {
			b.Fatalf("accepted %d of %d", len(stored), n)
		}
	}
	b.ReportMetric(float64(time.Since(start).Nanoseconds())/1000/float64(b.N*n), "µs/SVID")
	b.ReportMetric(float64((processCPU(b)-cpu0).Microseconds())/float64(b.N*n), "cpu-µs/SVID")
}

// processCPU is the CPU time this process has used (every thread, the
// garbage collector's included).
func processCPU(b *testing.B) time.Duration {
	b.Helper()
	d, err := procstat.CPU(os.Getpid())
	if err != nil {
		b.Fatal(err)
	}
	return d
}
