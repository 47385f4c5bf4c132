package manager

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/agent/cache"
	"github.com/castellan-dev/castellan/agent/client"
	"github.com/castellan-dev/castellan/agent/client/catest"
	"github.com/castellan-dev/castellan/agent/state"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// BenchmarkFirstSVID measures a workload's first SVID when nothing is
// cached and the CA is up: from the start of a bootstrapped agent with an
// empty cache to the SVID published for serving (sync, key, CSR, signing
// over mTLS, durable cache write).
func BenchmarkFirstSVID(b *testing.B) {
	ca := catest.New(b, td)
	ca.Start(b)
	ca.AddEntry(b, entry("ratings", time.Hour))
	dir := b.TempDir()
	cl, err := client.New(client.Config{Address: ca.Addr(), TrustDomain: td, Bundle: ca.Bundle(), DataDir: dir})
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	if err := cl.Bootstrap(b.Context(), ca.JoinToken(b, "node-1")); err != nil {
		b.Fatal(err)
	}
	var total time.Duration
	for i := 0; b.Loop(); i++ {
		c, err := cache.Open(filepath.Join(dir, fmt.Sprintf("cache-%d.db", i)), cache.Config{})
		if err != nil {
			b.Fatal(err)
		}
		store := state.NewStore()
		ch, stopWatch := store.Watch()
		m, err := New(Config{CA: cl, Cache: c, Store: store, TrustDomain: td})
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(b.Context())
		start := time.Now()
		done := make(chan error, 1)
		go func() { done <- m.Run(ctx) }()
		waitIdentities(b, store, ch, 1)
		total += time.Since(start)
		stopWatch()
		cancel()
		<-done
		_ = cl.Close() // next start dials afresh, as a new agent would
		_ = c.Close()
	}
	b.ReportMetric(float64(total.Microseconds())/1000/float64(b.N), "ms/first-svid")
}

// BenchmarkStartFromCache1000 measures an agent start with 1,000 cached
// identities and the CA down, until all are published for serving.
func BenchmarkStartFromCache1000(b *testing.B) {
	path, dead := cacheWith(b, 1000)
	var total time.Duration
	for b.Loop() {
		start := time.Now()
		store, stop := startDown(b, path, dead)
		total += time.Since(start)
		if n := len(store.Current().Identities); n != 1000 {
			b.Fatalf("serving %d identities, want 1000", n)
		}
		stop()
	}
	b.ReportMetric(float64(total.Microseconds())/1000/float64(b.N), "ms/start")
}

// BenchmarkMemoryPerIdentity measures the heap the agent holds per cached
// identity once 1,000 are loaded and published.
func BenchmarkMemoryPerIdentity(b *testing.B) {
	path, dead := cacheWith(b, 1000)
	var perID float64
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		store, stop := startDown(b, path, dead)
		runtime.GC()
		runtime.ReadMemStats(&after)
		perID = float64(int64(after.HeapInuse)-int64(before.HeapInuse)) / 1000
		runtime.KeepAlive(store)
		stop()
	}
	b.ReportMetric(perID, "B/identity")
}

// cacheWith writes a cache with n identities and returns its path and the
// address of a CA that is down.
func cacheWith(b *testing.B, n int) (string, string) {
	b.Helper()
	ca := catest.New(b, td)
	path := filepath.Join(b.TempDir(), "cache.db")
	c, err := cache.Open(path, cache.Config{})
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	var recs []cache.Record
	for i := range n {
		id := spiffeid.RequireFromPath(td, fmt.Sprintf("/ns/bench/sa/sa-%04d", i))
		recs = append(recs, cache.Record{
			EntryID: fmt.Sprintf("entry-%04d", i), Selectors: []state.Selector{{Type: "unix", Value: fmt.Sprintf("uid:%d", 1000+i)}},
			SVID: ca.Issue(b, id, time.Hour), NextRotation: now.Add(30 * time.Minute),
		})
	}
	if err := c.Put(ca.Bundle(), recs...); err != nil {
		b.Fatal(err)
	}
	if err := c.Close(); err != nil {
		b.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	dead := lis.Addr().String()
	_ = lis.Close()
	return path, dead
}

// startDown starts an agent on the cache at path with the CA down and
// returns once it serves every cached identity.
func startDown(b *testing.B, path, caAddr string) (*state.Store, func()) {
	b.Helper()
	c, err := cache.Open(path, cache.Config{})
	if err != nil {
		b.Fatal(err)
	}
	cl, err := client.New(client.Config{Address: caAddr, TrustDomain: td, DataDir: filepath.Dir(path)})
	if err != nil {
		b.Fatal(err)
	}
	store := state.NewStore()
	ch, stopWatch := store.Watch()
	defer stopWatch()
	m, err := New(Config{CA: cl, Cache: c, Store: store, TrustDomain: td})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	waitIdentities(b, store, ch, 1000)
	return store, func() {
		cancel()
		<-done
		_ = cl.Close()
		_ = c.Close()
	}
}

func waitIdentities(b *testing.B, store *state.Store, ch <-chan struct{}, n int) {
	b.Helper()
	timeout := time.After(10 * time.Second)
	for len(store.Current().Identities) < n {
		select {
		case <-ch:
		case <-timeout:
			b.Fatalf("serving %d identities after 10s, want %d", len(store.Current().Identities), n)
		}
	}
}
