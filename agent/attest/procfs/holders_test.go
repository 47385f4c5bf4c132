package procfs_test

import (
	"context"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/agent/attest/attesttest"
	"github.com/castellan-dev/castellan/agent/attest/peer"
	"github.com/castellan-dev/castellan/agent/attest/procfs"
)

// TestMain lets the test binary double as the workload helper process.
func TestMain(m *testing.M) { attesttest.Main(m) }

// TestScansAreShared: many connections checked at once cost one scan of
// /proc, not one each, and a scan recent enough is reused.
func TestScansAreShared(t *testing.T) {
	const conns = 8
	s := procfs.NewScanner(procfs.ScannerConfig{})
	lis, sock := attesttest.Listen(t)
	exe := attesttest.CopyExe(t)
	var bs []*peer.Binding
	for range conns {
		attesttest.StartCmdHelper(t, exe, sock, nil, "")
		conn := attesttest.Accept(t, lis)
		p, err := peer.Of(conn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = p.Process.Close() })
		b, err := peer.Bind(context.Background(), conn, p, s, true, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(b.Close)
		bs = append(bs, b)
	}
	before := s.Runs()
	now := time.Now()
	errs := make(chan error, conns)
	for _, b := range bs {
		go func() { errs <- b.Check(context.Background(), now) }()
	}
	for range conns {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	// Checks arriving while a scan runs wait for the next one: two at most.
	if n := s.Runs() - before; n < 1 || n > 2 {
		t.Fatalf("%d concurrent checks ran %d scans, want 1 or 2", conns, n)
	}
	before = s.Runs()
	for _, b := range bs {
		if err := b.Check(context.Background(), now); err != nil {
			t.Fatal(err)
		}
	}
	if n := s.Runs() - before; n != 0 {
		t.Fatalf("checks content with a scan since %v ran %d new scans", now, n)
	}
}
