package ledger

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/ca/ledger/index"
	"github.com/castellan-dev/castellan/ca/verifier"
	bolt "go.etcd.io/bbolt"
)

// benchCert is a stand-in for a P-256 leaf's DER (about the real size).
var benchCert = make([]byte, 560)

func benchEvent(n uint64) entry.Event {
	return entry.Event{
		Kind: entry.KindIssuance, Serial: fmt.Sprintf("%x", 1<<40+n),
		SPIFFEID: fmt.Sprintf("spiffe://cluster.local/ns/ns%d/sa/sa%d", n%100, (n/100)%100),
		Node:     fmt.Sprintf("node-%d", n%500), NotBefore: time.Unix(1_700_000_000, 0),
		NotAfter: time.Unix(1_700_003_600, 0), PublicKeySHA256: fmt.Sprintf("%064x", n), CertDER: benchCert,
	}
}

// BenchmarkAppend measures durable appends from concurrent callers, as the
// CA's handlers make them: single events from 1, 8, 32 and 256 callers
// (events/s until the indexer has indexed them all, and p50/p99 latency
// of one Append, which includes its fsync'd commit), and batches of 100
// from 32 callers.
func BenchmarkAppend(b *testing.B) {
	for _, c := range []struct{ batch, callers int }{{1, 1}, {1, 8}, {1, 32}, {1, 256}, {100, 32}} {
		batch := c.batch
		b.Run(fmt.Sprintf("batch=%d/callers=%d", batch, c.callers), func(b *testing.B) {
			l, err := Open(filepath.Join(b.TempDir(), "l.db"), Config{})
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			var next atomic.Uint64
			start := time.Now()
			lat := runCallers(b, c.callers, func() error {
				evs := make([]entry.Event, batch)
				for i := range evs {
					evs[i] = benchEvent(next.Add(1))
				}
				_, err := l.Append(context.Background(), evs...)
				return err
			})
			if err := index.Wait(l.Index, context.Background()); err != nil { // the indexer's work is the appends' too
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N*batch)/time.Since(start).Seconds(), "events/s")
			reportLatency(b, lat)
		})
	}
}

// runCallers runs b.N calls of op from callers goroutines and returns the
// latency of each call, sorted.
func runCallers(b *testing.B, callers int, op func() error) []time.Duration {
	var next atomic.Int64
	lats := make([][]time.Duration, callers)
	var wg sync.WaitGroup
	b.ResetTimer()
	for g := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(b.N) {
				start := time.Now()
				if err := op(); err != nil {
					b.Error(err)
					return
				}
				lats[g] = append(lats[g], time.Since(start))
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	var all []time.Duration
	for _, l := range lats {
		all = append(all, l...)
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	return all
}

// reportLatency reports the p50 and p99 of sorted latencies in ms.
func reportLatency(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}

// BenchmarkFdatasync is the reference for the Append latencies: one 4 KiB
// page written and fdatasync'd in a file next to the benchmarks' ledgers,
// the unit a bbolt commit pays twice (data pages, then the meta page).
func BenchmarkFdatasync(b *testing.B) {
	f, err := os.Create(filepath.Join(b.TempDir(), "sync"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	page := make([]byte, 4096)
	lat := runCallers(b, 1, func() error {
		if _, err := f.WriteAt(page, 0); err != nil {
			return err
		}
		return syscall.Fdatasync(int(f.Fd()))
	})
	reportLatency(b, lat)
}

// bigLedger is a 1,000,000-entry ledger shared by the read benchmarks and
// built once per test binary run.
type bigLedger struct {
	once sync.Once
	dir  string
	l    *Ledger
	err  error
}

var big1M bigLedger

const bigSize = 1_000_000

func (f *bigLedger) get(b *testing.B) *Ledger {
	f.once.Do(func() {
		f.dir, f.err = os.MkdirTemp("", "ledger-bench-")
		if f.err != nil {
			return
		}
		f.l, f.err = Open(filepath.Join(f.dir, "l.db"), Config{})
		for i := uint64(0); i < bigSize && f.err == nil; i += 10_000 {
			evs := make([]entry.Event, 10_000)
			for j := range evs {
				evs[j] = benchEvent(i + uint64(j))
			}
			_, f.err = f.l.Append(context.Background(), evs...)
		}
		if f.err == nil {
			f.err = index.Wait(f.l.Index, context.Background()) // measure queries, not indexing
		}
	})
	if f.err != nil {
		b.Fatal(f.err)
	}
	return f.l
}

func TestMain(m *testing.M) {
	code := m.Run()
	if err := stopPostgres(); err != nil {
		fmt.Fprintln(os.Stderr, "ledger tests: stop postgres:", err)
		code = 1
	}
	if big1M.l != nil {
		big1M.l.Close()
		os.RemoveAll(big1M.dir)
	}
	os.Exit(code)
}

// BenchmarkList1M lists one page of 100 entries for a random SPIFFE ID
// (100 entries each) in a 1,000,000-entry ledger; p99-ms is per page.
func BenchmarkList1M(b *testing.B) {
	l := big1M.get(b)
	rng := rand.New(rand.NewPCG(1, 2))
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		n := rng.Uint64N(bigSize)
		id := fmt.Sprintf("spiffe://cluster.local/ns/ns%d/sa/sa%d", n%100, (n/100)%100)
		start := time.Now()
		page, _, err := l.List(context.Background(), index.Filter{SPIFFEID: id}, 100, "")
		lat = append(lat, time.Since(start))
		if err != nil || len(page) != 100 {
			b.Fatalf("%d entries, %v", len(page), err)
		}
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}

// BenchmarkInclusionProof1M builds an inclusion proof for a random entry
// of a 1,000,000-entry tree.
func BenchmarkInclusionProof1M(b *testing.B) {
	l := big1M.get(b)
	rng := rand.New(rand.NewPCG(3, 4))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := l.InclusionProof(rng.Uint64N(bigSize), bigSize); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerify1M recomputes the whole 1,000,000-entry tree from the
// stored entries through Export, as `castellanctl ledger verify` does.
func BenchmarkVerify1M(b *testing.B) {
	l := big1M.get(b)
	signed, err := l.Checkpoint(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	cp, err := verifier.OpenCheckpoint(signed, "", l.VerifierKey())
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		v := verifier.NewTree(cp)
		if err := l.Export(context.Background(), 0, func(lf verifier.Leaf) error { v.Add(lf); return nil }); err != nil {
			b.Fatal(err)
		}
		if rep := v.Finish(); !rep.OK() {
			b.Fatal(rep.Findings)
		}
	}
	b.ReportMetric(float64(b.N*bigSize)/b.Elapsed().Seconds(), "entries/s")
}

// BenchmarkOpen1M opens a 1,000,000-entry ledger file, which checks its
// integrity first: every page (boltcheck), bbolt's tx.Check and the
// Merkle tree recomputed from the entries. This is castellan-server's
// start-up cost for a ledger of that size.
func BenchmarkOpen1M(b *testing.B) {
	l := big1M.get(b)
	dir := b.TempDir()
	path := filepath.Join(dir, "copy.db")
	if err := l.bolt.View(func(tx *bolt.Tx) error { return tx.CopyFile(path, 0o600) }); err != nil {
		b.Fatal(err)
	}
	key, err := os.ReadFile(filepath.Join(big1M.dir, "l.db.key"))
	if err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(path+".key", key, 0o600); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		c, err := Open(path, Config{})
		if err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
}
