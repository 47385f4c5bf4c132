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
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// benchCert is a stand-in for a P-256 leaf's DER (about the real size).
var benchCert = make([]byte, 560)

func benchEvent(n uint64) Event {
	return Event{
		Kind: KindIssuance, Serial: fmt.Sprintf("%x", 1<<40+n),
		SPIFFEID: fmt.Sprintf("spiffe://cluster.local/ns/ns%d/sa/sa%d", n%100, (n/100)%100),
		Node:     fmt.Sprintf("node-%d", n%500), NotBefore: time.Unix(1_700_000_000, 0),
		NotAfter: time.Unix(1_700_003_600, 0), PublicKeySHA256: fmt.Sprintf("%064x", n), CertDER: benchCert,
	}
}

// BenchmarkAppend measures durable append throughput (events/s) for
// batches of 1 and 100, from parallel callers as the CA's handlers are
// (callers = goroutines per CPU x GOMAXPROCS).
func BenchmarkAppend(b *testing.B) {
	for _, c := range []struct{ batch, perCPU int }{{1, 16}, {1, 128}, {100, 16}} {
		batch := c.batch
		b.Run(fmt.Sprintf("batch=%d/callers=%dxCPU", batch, c.perCPU), func(b *testing.B) {
			l, err := Open(filepath.Join(b.TempDir(), "l.db"), Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			var next atomic.Uint64
			b.SetParallelism(c.perCPU)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				evs := make([]Event, batch)
				for pb.Next() {
					for i := range evs {
						evs[i] = benchEvent(next.Add(1))
					}
					if _, err := l.Append(context.Background(), evs...); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "events/s")
		})
	}
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
		f.l, f.err = Open(filepath.Join(f.dir, "l.db"), Options{})
		for i := uint64(0); i < bigSize && f.err == nil; i += 10_000 {
			evs := make([]Event, 10_000)
			for j := range evs {
				evs[j] = benchEvent(i + uint64(j))
			}
			_, f.err = f.l.Append(context.Background(), evs...)
		}
		if f.err == nil {
			f.err = f.l.waitIndexed(context.Background()) // measure queries, not indexing
		}
	})
	if f.err != nil {
		b.Fatal(f.err)
	}
	return f.l
}

func TestMain(m *testing.M) {
	code := m.Run()
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
		page, _, err := l.List(context.Background(), Filter{SPIFFEID: id}, 100, "")
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
	cp, err := OpenCheckpoint(signed, "", l.VerifierKey())
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		v := NewTreeVerifier(cp)
		if err := l.Export(context.Background(), 0, func(lf Leaf) error { v.Add(lf); return nil }); err != nil {
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
	if err := l.db.View(func(tx *bolt.Tx) error { return tx.CopyFile(path, 0o600) }); err != nil {
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
		c, err := Open(path, Options{})
		if err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
}
