package server

import (
	"context"
	"crypto"
	"crypto/elliptic"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	cav1 "github.com/castellan-dev/castellan/api/castellan/ca/v1"
	"github.com/castellan-dev/castellan/ca/ledger/index"
)

// benchCSRs pre-generates distinct CSRs for appID, outside the timed loop.
func benchCSRs(b *testing.B, kind string, n int) [][]byte {
	out := make([][]byte, n)
	var key crypto.Signer
	for i := range out {
		switch kind {
		case "rsa2048":
			if i%64 == 0 { // RSA key generation is slow; share a key among CSRs
				key = rsaKey(b, 2048)
			}
		default:
			key = ecKey(b, elliptic.P256())
		}
		out[i] = workloadCSR(b, key, appID)
	}
	return out
}

// cpuTime returns the CPU time (user + system) this process has used. The
// benchmarks report CPU per SVID next to SVIDs/s because the 2-core machine
// they run on is shared: CPU per SVID is what bounds throughput.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// indexedCPU returns cpu, measured once the ledgers' indexers have indexed
// every entry appended so far (the indexer writes the index keys of an
// issuance a moment after its append: that work is issuance's too).
func indexedCPU(b *testing.B, cpu func() time.Duration, envs ...*env) func() time.Duration {
	return func() time.Duration {
		for _, e := range envs {
			if err := index.Wait(e.ledger.Index, context.Background()); err != nil {
				b.Fatal(err)
			}
		}
		return cpu()
	}
}

// BenchmarkIssuanceGRPC measures end-to-end issuance of one SVID per call:
// mutual TLS over loopback gRPC, CSR validation, node authorization,
// signing and a durable ledger append, from 1, 8 and 32 concurrent callers
// (goroutines sharing one agent connection). It reports SVIDs/s, CPU per
// SVID and the p50/p99 latency of one call.
func BenchmarkIssuanceGRPC(b *testing.B) {
	for _, c := range []struct {
		kind    string
		callers int
	}{{"p256", 1}, {"p256", 8}, {"p256", 32}, {"rsa2048", 8}} {
		b.Run(fmt.Sprintf("%s/callers=%d", c.kind, c.callers), func(b *testing.B) {
			e := newEnv(b)
			e.addEntry(b, appID, "node-a")
			runSingles(b, e.agentClient(b, "node-a"), c.kind, c.callers, indexedCPU(b, cpuTime, e))
		})
	}
}

// runSingles sends b.N single-CSR SignX509SVID calls of key type kind
// from callers goroutines through agent and reports SVIDs/s, the CPU per
// SVID that cpu measures and the p50/p99 latency of one call.
func runSingles(b *testing.B, agent cav1.CertificateAuthorityServiceClient, kind string, callers int, cpu func() time.Duration) {
	csrs := benchCSRs(b, kind, 512)
	ctx := context.Background()
	var next atomic.Int64
	start, cpu0 := time.Now(), cpu()
	lat := runCallers(b, callers, func() error {
		csr := csrs[int(next.Add(1))%len(csrs)]
		_, err := agent.SignX509SVID(ctx, &cav1.SignX509SVIDRequest{Csr: csr})
		return err
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "SVIDs/s")
	b.ReportMetric(float64((cpu()-cpu0).Microseconds())/float64(b.N), "cpu-µs/SVID")
	reportLatency(b, lat)
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

// benchBatchSize is the number of CSRs per BatchSignX509SVID call.
const benchBatchSize = 100

// benchAgents is the number of agents (nodes, each with its own connection)
// calling in parallel in BenchmarkBatchIssuanceGRPC.
const benchAgents = 4

// BenchmarkBatchIssuanceGRPC measures end-to-end issuance through the batch
// API: one op is one batch of benchBatchSize SVIDs; benchAgents agents, each
// on its own mutual-TLS connection, send batches in parallel.
func BenchmarkBatchIssuanceGRPC(b *testing.B) {
	b.Run("p256", func(b *testing.B) {
		e := newEnv(b)
		agents := make([]cav1.CertificateAuthorityServiceClient, benchAgents)
		for i := range agents {
			node := fmt.Sprintf("node-%d", i)
			e.addEntry(b, appID, node)
			agents[i] = e.agentClient(b, node)
		}
		runBatches(b, agents, indexedCPU(b, cpuTime, e))
	})
}

// runBatches sends batches of benchBatchSize P-256 CSRs from the agents in
// parallel and reports SVIDs/s and the CPU per SVID that cpu measures.
func runBatches(b *testing.B, agents []cav1.CertificateAuthorityServiceClient, cpu func() time.Duration) {
	csrs := benchCSRs(b, "p256", 1000)
	batches := make([]*cav1.BatchSignX509SVIDRequest, len(csrs)/benchBatchSize)
	for i := range batches {
		batches[i] = &cav1.BatchSignX509SVIDRequest{}
		for _, c := range csrs[i*benchBatchSize : (i+1)*benchBatchSize] {
			batches[i].Requests = append(batches[i].Requests, &cav1.SignX509SVIDRequest{Csr: c})
		}
	}
	ctx := context.Background()
	var next atomic.Int32
	b.SetParallelism((len(agents) + 1) / 2) // GOMAXPROCS is 2 on the target machine
	b.ResetTimer()
	start, cpu0 := time.Now(), cpu()
	b.RunParallel(func(pb *testing.PB) {
		agent := agents[int(next.Add(1)-1)%len(agents)]
		i := 0
		for pb.Next() {
			resp, err := agent.BatchSignX509SVID(ctx, batches[i%len(batches)])
			if err != nil {
				b.Error(err)
				return
			}
			if e := resp.GetResults()[0].GetError(); e != nil {
				b.Error(e.GetMessage())
				return
			}
			i++
		}
	})
	b.StopTimer()
	svids := b.N * benchBatchSize
	b.ReportMetric(float64(svids)/time.Since(start).Seconds(), "SVIDs/s")
	b.ReportMetric(float64((cpu()-cpu0).Microseconds())/float64(svids), "cpu-µs/SVID")
}
