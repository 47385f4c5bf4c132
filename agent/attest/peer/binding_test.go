package peer_test

import (
	"context"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/agent/attest/attesttest"
	"github.com/castellan-dev/castellan/agent/attest/peer"
	"github.com/castellan-dev/castellan/agent/attest/procfs"
	"github.com/castellan-dev/castellan/agent/attest/unixattest"
	"github.com/castellan-dev/castellan/agent/state"
)

// TestMain lets the test binary double as the workload helper process.
func TestMain(m *testing.M) { attesttest.Main(m) }

func TestBindingAtAttestation(t *testing.T) {
	other := attesttest.CopyExe(t)
	tests := []struct {
		name        string
		command     string
		attr        *syscall.SysProcAttr
		reason      string
		says        string
		inheritable bool
	}{
		{name: "sole holder"},
		{name: "sole holder in another network namespace", attr: &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}},
		{name: "shared with a child", command: "share", reason: peer.ReasonShared, says: "held by more than one process"},
		{name: "handed to a child", command: "handoff", reason: peer.ReasonNotHolder, says: "no longer holds this connection"},
		{name: "kept across execve", command: "exec", inheritable: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			lis, sock := attesttest.Listen(t)
			h := attesttest.StartCmdHelper(t, other, sock, tc.attr, "")
			if tc.command != "" {
				h.Do(tc.command)
			}
			conn := attesttest.Accept(t, lis)
			p, err := peer.Of(conn)
			if err != nil {
				t.Fatal(err)
			}
			defer p.Process.Close()
			b, err := peer.Bind(context.Background(), conn, p, procfs.NewScanner(procfs.ScannerConfig{}), true, time.Now())
			if tc.reason != "" {
				if peer.ReasonOf(err) != tc.reason || !strings.Contains(err.Error(), tc.says) {
					t.Fatalf("bind: %v; want reason %s saying %q", err, tc.reason, tc.says)
				}
				return
			}
			if err != nil {
				t.Fatalf("bind: %v", err)
			}
			defer b.Close()
			if b.Inheritable() != tc.inheritable {
				t.Fatalf("Inheritable = %v, want %v", b.Inheritable(), tc.inheritable)
			}
			p.Binding = b
			sels, err := unixattest.New().Attest(context.Background(), p)
			if err != nil {
				t.Fatal(err)
			}
			hasPath := slices.ContainsFunc(sels, func(s state.Selector) bool { return strings.HasPrefix(s.Value, "path:") })
			if hasPath == tc.inheritable {
				t.Fatalf("selectors %v: an inheritable descriptor must withhold path and sha256, a close-on-exec one must not", sels)
			}
		})
	}
}

func TestBindingAfterAttestation(t *testing.T) {
	other := attesttest.CopyExe(t)
	second := attesttest.CopyExe(t)
	tests := []struct {
		name, command, reason, says string
		exec                        string
	}{
		{name: "shares with a child", command: "share", reason: peer.ReasonShared, says: "held by more than one process"},
		{name: "hands on to a child", command: "handoff", reason: peer.ReasonNotHolder, says: "no longer holds this connection"},
		{name: "executes another binary keeping the descriptor", command: "exec", exec: second, reason: peer.ReasonExecuted, says: "called execve"},
		{name: "changes uid", command: "setuid", reason: peer.ReasonCreds, says: "uid 65534"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			lis, sock := attesttest.Listen(t)
			h := attesttest.StartCmdHelper(t, other, sock, nil, tc.exec)
			conn := attesttest.Accept(t, lis)
			p, err := peer.Of(conn)
			if err != nil {
				t.Fatal(err)
			}
			defer p.Process.Close()
			b, err := peer.Bind(context.Background(), conn, p, procfs.NewScanner(procfs.ScannerConfig{}), true, time.Now())
			if err != nil {
				t.Fatalf("bind: %v", err)
			}
			defer b.Close()
			h.Do(tc.command)
			err = b.Check(context.Background(), time.Now())
			if peer.ReasonOf(err) != tc.reason || !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("Check: %v; want reason %s saying %q", err, tc.reason, tc.says)
			}
			if again := b.Check(context.Background(), time.Now()); again == nil || again.Error() != err.Error() {
				t.Fatalf("second Check = %v; a failed binding must stay failed", again)
			}
		})
	}
}
