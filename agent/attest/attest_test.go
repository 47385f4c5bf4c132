package attest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/agent/state"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

const helperEnv = "CASTELLAN_ATTEST_HELPER_SOCKET"

// TestMain doubles as the helper process: with helperEnv set, the binary
// connects to that socket and holds the connection until stdin closes.
func TestMain(m *testing.M) {
	switch os.Getenv(helperModeEnv) {
	case "cmd":
		os.Exit(commandHelper(os.Getenv(helperEnv)))
	case "idle":
		idleHelper()
	}
	if sock := os.Getenv(helperEnv); sock != "" {
		conn, err := net.Dial("unix", sock)
		if err != nil {
			os.Exit(3)
		}
		_, _ = io.Copy(io.Discard, os.Stdin)
		_ = conn.Close()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func listen(t testing.TB) (*net.UnixListener, string) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "a.sock")
	lis, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = lis.Close() })
	return lis, sock
}

func accept(t *testing.T, lis *net.UnixListener) *net.UnixConn {
	t.Helper()
	_ = lis.SetDeadline(time.Now().Add(10 * time.Second))
	c, err := lis.AcceptUnix()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// copyExe copies the test binary to a new path, as a distinct workload binary.
func copyExe(t testing.TB) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "workload-helper")
	if err := os.WriteFile(p, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// spawn starts exe as the helper connecting to sock; closing the returned
// stdin writer lets it exit.
func spawn(t *testing.T, exe, sock string) (*exec.Cmd, io.WriteCloser) {
	t.Helper()
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), helperEnv+"="+sock)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = stdin.Close(); _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return cmd, stdin
}

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
	helper := copyExe(t)
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
			cmd, _ := spawn(t, helper, sock)
			return cmd.Process.Pid
		}, helper},
	}
	u := NewUnix()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			lis, sock := listen(t)
			pid := tc.connect(t, sock)
			peer, err := PeerOf(accept(t, lis))
			if err != nil {
				t.Fatal(err)
			}
			defer peer.Process.Close()
			if peer.PID != pid {
				t.Fatalf("PID = %d, want %d", peer.PID, pid)
			}
			got, err := u.Attest(context.Background(), peer)
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
	lis, sock := listen(t)
	cmd, stdin := spawn(t, copyExe(t), sock)
	peer, err := PeerOf(accept(t, lis))
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Process.Close()
	if err := peer.Process.Alive(); err != nil {
		t.Fatalf("Alive before exit: %v", err)
	}
	_ = stdin.Close()
	_ = cmd.Wait() // reaped: its PID may now be reused
	_, err = NewUnix().Attest(context.Background(), peer)
	if ReasonOf(err) != ReasonExited {
		t.Fatalf("Attest after exit: err = %v, want reason %s", err, ReasonExited)
	}
	if ReasonOf(peer.Process.Alive()) != ReasonExited {
		t.Fatal("Alive after exit: want error")
	}
}

func TestUnixCachesHashByFileIdentity(t *testing.T) {
	u := NewUnix()
	helper := copyExe(t)
	for range 3 {
		lis, sock := listen(t)
		_, _ = spawn(t, helper, sock)
		peer, err := PeerOf(accept(t, lis))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := u.Attest(context.Background(), peer); err != nil {
			t.Fatal(err)
		}
		_ = peer.Process.Close()
	}
	u.mu.Lock()
	n := len(u.hashes)
	u.mu.Unlock()
	if n != 1 {
		t.Fatalf("hash cache holds %d entries after three attestations of one binary, want 1", n)
	}
}

func TestUnixRequiresPinnedPeer(t *testing.T) {
	_, err := NewUnix().Attest(context.Background(), Peer{PID: os.Getpid()})
	if ReasonOf(err) != ReasonPin {
		t.Fatalf("err = %v, want reason %s", err, ReasonPin)
	}
}

type fakeAttestor struct{ err error }

func (f fakeAttestor) Attest(context.Context, Peer) ([]state.Selector, error) {
	if f.err != nil {
		return nil, f.err
	}
	return []state.Selector{{Type: "unix", Value: "uid:42"}}, nil
}

// TestCredentialsBindAttestationToCalls serves gRPC with the credentials and
// checks what FromContext returns inside a call, and which failures count.
func TestCredentialsBindAttestationToCalls(t *testing.T) {
	tests := []struct {
		name     string
		attestor Attestor
		wantSel  bool
		reason   string
	}{
		{"attested", fakeAttestor{}, true, ""},
		{"attestor fails", fakeAttestor{err: &Error{Reason: ReasonExe, Err: errors.New("boom")}}, false, ReasonExe},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			var reasons []string
			creds := NewCredentials(tc.attestor, time.Second, func(r string) { mu.Lock(); reasons = append(reasons, r); mu.Unlock() })
			var got []state.Selector
			var gotErr error
			srv := grpc.NewServer(grpc.Creds(creds), grpc.UnaryInterceptor(
				func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
					got, gotErr = FromContext(ctx)
					return h(ctx, req)
				}))
			healthpb.RegisterHealthServer(srv, health.NewServer())
			lis, sock := listen(t)
			go func() { _ = srv.Serve(lis) }()
			t.Cleanup(srv.Stop)
			conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if _, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
				t.Fatal(err)
			}
			if tc.wantSel != (len(got) == 1 && gotErr == nil) {
				t.Fatalf("FromContext = %v, %v", got, gotErr)
			}
			mu.Lock()
			defer mu.Unlock()
			if tc.reason != "" && (ReasonOf(gotErr) != tc.reason || !slices.Equal(reasons, []string{tc.reason})) {
				t.Fatalf("err %v, counted %v; want reason %s once", gotErr, reasons, tc.reason)
			}
			if tc.reason == "" && len(reasons) != 0 {
				t.Fatalf("counted failures %v for a successful attestation", reasons)
			}
		})
	}
}

func TestFromContextWithoutAttestation(t *testing.T) {
	if _, err := FromContext(context.Background()); ReasonOf(err) != ReasonTransport {
		t.Fatalf("err = %v, want reason %s", err, ReasonTransport)
	}
}
