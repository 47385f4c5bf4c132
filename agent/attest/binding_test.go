package attest

import (
	"context"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/agent/state"
	"google.golang.org/grpc/peer"
)

func TestBindingAtAttestation(t *testing.T) {
	other := copyExe(t)
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
		{name: "shared with a child", command: "share", reason: ReasonShared, says: "held by more than one process"},
		{name: "handed to a child", command: "handoff", reason: ReasonNotHolder, says: "no longer holds this connection"},
		{name: "kept across execve", command: "exec", inheritable: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			lis, sock := listen(t)
			h := startCmdHelper(t, other, sock, tc.attr, "")
			if tc.command != "" {
				h.do(tc.command)
			}
			conn := accept(t, lis)
			peer, err := PeerOf(conn)
			if err != nil {
				t.Fatal(err)
			}
			defer peer.Process.Close()
			b, err := bind(context.Background(), conn, peer, NewScanner("/proc", nil), true, time.Now())
			if tc.reason != "" {
				if ReasonOf(err) != tc.reason || !strings.Contains(err.Error(), tc.says) {
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
			peer.Binding = b
			sels, err := NewUnix().Attest(context.Background(), peer)
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
	other := copyExe(t)
	second := copyExe(t)
	tests := []struct {
		name, command, reason, says string
		exec                        string
	}{
		{name: "shares with a child", command: "share", reason: ReasonShared, says: "held by more than one process"},
		{name: "hands on to a child", command: "handoff", reason: ReasonNotHolder, says: "no longer holds this connection"},
		{name: "executes another binary keeping the descriptor", command: "exec", exec: second, reason: ReasonExecuted, says: "called execve"},
		{name: "changes uid", command: "setuid", reason: ReasonCreds, says: "uid 65534"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			lis, sock := listen(t)
			h := startCmdHelper(t, other, sock, nil, tc.exec)
			conn := accept(t, lis)
			peer, err := PeerOf(conn)
			if err != nil {
				t.Fatal(err)
			}
			defer peer.Process.Close()
			b, err := bind(context.Background(), conn, peer, NewScanner("/proc", nil), true, time.Now())
			if err != nil {
				t.Fatalf("bind: %v", err)
			}
			defer b.Close()
			h.do(tc.command)
			err = b.Check(context.Background(), time.Now())
			if ReasonOf(err) != tc.reason || !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("Check: %v; want reason %s saying %q", err, tc.reason, tc.says)
			}
			if again := b.Check(context.Background(), time.Now()); again == nil || again.Error() != err.Error() {
				t.Fatalf("second Check = %v; a failed binding must stay failed", again)
			}
		})
	}
}

// TestScansAreShared: many connections checked at once cost one scan of
// /proc, not one each, and a scan recent enough is reused.
func TestScansAreShared(t *testing.T) {
	const conns = 8
	s := NewScanner("/proc", nil)
	lis, sock := listen(t)
	exe := copyExe(t)
	var bs []*Binding
	for range conns {
		startCmdHelper(t, exe, sock, nil, "")
		conn := accept(t, lis)
		peer, err := PeerOf(conn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = peer.Process.Close() })
		b, err := bind(context.Background(), conn, peer, s, true, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(b.Close)
		bs = append(bs, b)
	}
	before := s.runs.Load()
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
	if n := s.runs.Load() - before; n < 1 || n > 2 {
		t.Fatalf("%d concurrent checks ran %d scans, want 1 or 2", conns, n)
	}
	before = s.runs.Load()
	for _, b := range bs {
		if err := b.Check(context.Background(), now); err != nil {
			t.Fatal(err)
		}
	}
	if n := s.runs.Load() - before; n != 0 {
		t.Fatalf("checks content with a scan since %v ran %d new scans", now, n)
	}
}

// TestCredentialsCheckHolderOnEveryCall runs the handshake on a real
// connection and checks FromContext after the client changes: every
// attestor (unix, or k8s whose selectors come from cgroups) gets the holder
// checks; only attestors that bind the process also refuse an execve.
func TestCredentialsCheckHolderOnEveryCall(t *testing.T) {
	other, second := copyExe(t), copyExe(t)
	tests := []struct {
		name     string
		attestor Attestor
		command  string
		reason   string // "": still attested
	}{
		{"unix: shared", NewUnix(), "share", ReasonShared},
		{"k8s-like: shared", fakeAttestor{}, "share", ReasonShared},
		{"k8s-like: handed on", fakeAttestor{}, "handoff", ReasonNotHolder},
		{"unix: execve keeping the connection", NewUnix(), "exec", ReasonExecuted},
		{"k8s-like: execve keeping the connection", fakeAttestor{}, "exec", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			lis, sock := listen(t)
			h := startCmdHelper(t, other, sock, nil, second)
			creds := NewCredentials(tc.attestor, 5*time.Second, nil, WithHolderMaxAge(0))
			conn, auth, err := creds.ServerHandshake(accept(t, lis))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			ctx := peer.NewContext(context.Background(), &peer.Peer{AuthInfo: auth})
			if _, err := FromContext(ctx); err != nil {
				t.Fatalf("before: %v", err)
			}
			h.do(tc.command)
			_, err = FromContext(ctx)
			if ReasonOf(err) != tc.reason && !(tc.reason == "" && err == nil) {
				t.Fatalf("after %s: %v; want reason %q", tc.command, err, tc.reason)
			}
		})
	}
}
