package unixattest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"

	"github.com/castellan-dev/castellan/agent/attest/attesttest"
	"github.com/castellan-dev/castellan/agent/attest/peer"
	"github.com/castellan-dev/castellan/agent/state"
)

// TestMain lets the test binary double as the workload helper process.
func TestMain(m *testing.M) { attesttest.Main(m) }

func sha256File(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func want(exe string, sum string) []state.Selector {
	return []state.Selector{
		{Type: "unix", Value: "uid:" + strconv.Itoa(os.Getuid())},
		{Type: "unix", Value: "gid:" + strconv.Itoa(os.Getgid())},
		{Type: "unix", Value: "path:" + exe},
		{Type: "unix", Value: "sha256:" + sum},
	}
}

func TestUnixAttestsRealProcesses(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	self, _ = filepath.EvalSymlinks(self)
	helper := attesttest.CopyExe(t)
	tests := []struct {
		name    string
		connect func(t *testing.T, sock string) int // returns the expected PID
		exe     string
	}{
		{"test binary itself", func(t *testing.T, sock string) int {
			c, err := net.Dial("unix", sock)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = c.Close() })
			return os.Getpid()
		}, self},
		{"child running a copied binary", func(t *testing.T, sock string) int {
			cmd, _ := attesttest.Spawn(t, helper, sock)
			return cmd.Process.Pid
		}, helper},
	}
	u := New()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			lis, sock := attesttest.Listen(t)
			pid := tc.connect(t, sock)
			p, err := peer.Of(attesttest.Accept(t, lis))
			if err != nil {
				t.Fatal(err)
			}
			defer p.Process.Close()
			if p.PID != pid {
				t.Fatalf("PID = %d, want %d", p.PID, pid)
			}
			got, err := u.Attest(context.Background(), p)
			if err != nil {
				t.Fatal(err)
			}
			if w := want(tc.exe, sha256File(t, tc.exe)); !slices.Equal(got, w) {
				t.Fatalf("selectors = %v\nwant %v", got, w)
			}
		})
	}
}

func TestUnixRefusesExitedProcess(t *testing.T) {
	lis, sock := attesttest.Listen(t)
	cmd, stdin := attesttest.Spawn(t, attesttest.CopyExe(t), sock)
	p, err := peer.Of(attesttest.Accept(t, lis))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Process.Close()
	if err := p.Process.Alive(); err != nil {
		t.Fatalf("Alive before exit: %v", err)
	}
	_ = stdin.Close()
	_ = cmd.Wait() // reaped: its PID may now be reused
	_, err = New().Attest(context.Background(), p)
	if peer.ReasonOf(err) != peer.ReasonExited {
		t.Fatalf("Attest after exit: err = %v, want reason %s", err, peer.ReasonExited)
	}
	if peer.ReasonOf(p.Process.Alive()) != peer.ReasonExited {
		t.Fatal("Alive after exit: want error")
	}
}

func TestUnixCachesHashByFileIdentity(t *testing.T) {
	u := New()
	helper := attesttest.CopyExe(t)
	for range 3 {
		lis, sock := attesttest.Listen(t)
		_, _ = attesttest.Spawn(t, helper, sock)
		p, err := peer.Of(attesttest.Accept(t, lis))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := u.Attest(context.Background(), p); err != nil {
			t.Fatal(err)
		}
		_ = p.Process.Close()
	}
	u.mu.Lock()
	n := len(u.hashes)
	u.mu.Unlock()
	if n != 1 {
		t.Fatalf("hash cache holds %d entries after three attestations of one binary, want 1", n)
	}
}

func TestUnixRequiresPinnedPeer(t *testing.T) {
	_, err := New().Attest(context.Background(), peer.Peer{PID: os.Getpid()})
	if peer.ReasonOf(err) != peer.ReasonPin {
		t.Fatalf("err = %v, want reason %s", err, peer.ReasonPin)
	}
}
