package peer_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/agent/attest"
	"github.com/castellan-dev/castellan/agent/attest/attesttest"
	"github.com/castellan-dev/castellan/agent/attest/peer"
	"github.com/castellan-dev/castellan/agent/attest/procfs"
)

// benchBinding binds a helper process's connection, as attest.Credentials
// does.
func benchBinding(b *testing.B) *peer.Binding {
	b.Helper()
	lis, sock := attesttest.Listen(b)
	attesttest.StartCmdHelper(b, attesttest.CopyExe(b), sock, nil, "")
	conn, err := lis.AcceptUnix()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = conn.Close() })
	p, err := peer.Of(conn)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = p.Process.Close() })
	bd, err := peer.Bind(context.Background(), conn, p, procfs.NewScanner(procfs.ScannerConfig{}), true, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(bd.Close)
	return bd
}

// BenchmarkHolderCheckPerCall is the check made on every call and push:
// the pinned process alive, its descriptor, executable and credentials
// re-read, and the holder scan reused while younger than
// DefaultHolderMaxAge.
func BenchmarkHolderCheckPerCall(b *testing.B) {
	bd := benchBinding(b)
	ctx := context.Background()
	for b.Loop() {
		if err := bd.Check(ctx, time.Now().Add(-attest.DefaultHolderMaxAge)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkHolderCheckWithScan forces a fresh scan of every process's
// descriptor table on each check: the cost of an attestation, and of a call
// once the last scan is older than DefaultHolderMaxAge (shared by all
// connections checking at that moment).
func BenchmarkHolderCheckWithScan(b *testing.B) {
	bd := benchBinding(b)
	ctx := context.Background()
	for b.Loop() {
		if err := bd.Check(ctx, time.Now()); err != nil {
			b.Fatal(err)
		}
	}
	procs, fds := countFDs()
	b.ReportMetric(float64(procs), "processes")
	b.ReportMetric(float64(fds), "descriptors")
}

// countFDs counts the processes and descriptors a scan reads.
func countFDs() (procs, fds int) {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if e.Name()[0] < '0' || e.Name()[0] > '9' {
			continue
		}
		procs++
		f, _ := os.ReadDir("/proc/" + e.Name() + "/fd")
		fds += len(f)
	}
	return procs, fds
}
