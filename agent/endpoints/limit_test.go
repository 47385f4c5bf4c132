package endpoints

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	workloadpb "github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/castellan-dev/castellan/internal/testroot"
)

// floodEnv makes the test binary a flooder: "SOCKET N" opens N connections
// that send the HTTP/2 preface and then nothing, prints "ready", and prints
// "closed K" once K of them have been closed by the server (or 30 s pass).
const floodEnv = "CASTELLAN_ENDPOINTS_FLOOD"

func TestMain(m *testing.M) {
	if v := os.Getenv(floodEnv); v != "" {
		os.Exit(flood(v))
	}
	os.Exit(m.Run())
}

func flood(arg string) int {
	sock, nStr, _ := strings.Cut(arg, " ")
	n, err := strconv.Atoi(nStr)
	if err != nil {
		return 2
	}
	closed := make(chan struct{}, n)
	for range n {
		c, err := net.Dial("unix", sock)
		if err != nil {
			return 3
		}
		// The client preface and an empty SETTINGS frame, as a gRPC client
		// sends on connect; then silence.
		_, _ = c.Write(append([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), 0, 0, 0, 4, 0, 0, 0, 0, 0))
		go func() {
			_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
			_, err := io.Copy(io.Discard, c)
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				closed <- struct{}{}
			}
		}()
	}
	fmt.Println("ready")
	k := 0
	timeout := time.After(30 * time.Second)
	for k < n {
		select {
		case <-closed:
			k++
		case <-timeout:
			fmt.Println("closed", k)
			return 0
		}
	}
	fmt.Println("closed", k)
	return 0
}

// asNobody copies the test binary where uid 65534 may run it and returns
// a command running it as that uid.
func asNobody(t *testing.T) *exec.Cmd {
	t.Helper()
	testroot.Require(t, "run a process as another uid")
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "castellan-flood-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	b, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(dir, "flood")
	if err := os.WriteFile(exe, b, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	return cmd
}

// counter returns the value of counter name with label reason (or no label).
func (e *env) counter(t *testing.T, name, reason string) float64 {
	t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if reason == "" || (len(m.GetLabel()) == 1 && m.GetLabel()[0].GetValue() == reason) {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestAnotherUsersFloodDoesNotLockOutWorkloads: a user (uid 65534) opens
// more connections than it may and leaves them idle. Its excess connections
// are closed at once and counted, the rest after the idle timeout, and a
// workload of another uid is served all along.
func TestAnotherUsersFloodDoesNotLockOutWorkloads(t *testing.T) {
	const perCaller, flooders = 8, 40
	e := start(t, nil, func(c *Config) {
		c.Limits = Limits{MaxConnsPerCaller: perCaller, IdleTimeout: 500 * time.Millisecond}
	})
	cmd := asNobody(t)
	for d := filepath.Dir(e.sock); d != os.TempDir(); d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil { // let uid 65534 reach the socket
			t.Fatal(err)
		}
	}
	cmd.Env = append(os.Environ(), floodEnv+"="+e.sock+" "+strconv.Itoa(flooders))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	lines := bufio.NewReader(out)
	if l, err := lines.ReadString('\n'); strings.TrimSpace(l) != "ready" {
		t.Fatalf("flooder: %q %v", l, err)
	}
	waitFor(t, 10*time.Second, "the excess connections to be refused", func() bool {
		return e.counter(t, "castellan_agent_limit_refusals_total", "connections_per_uid") == flooders-perCaller
	})
	// The flooder holds every slot it may: a workload of another uid is
	// still served, promptly.
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel()
	if _, err := workloadapi.FetchX509SVID(ctx, workloadapi.WithAddr("unix://"+e.sock)); err != nil {
		t.Fatalf("workload of uid %d while uid 65534 holds its slots: %v", os.Getuid(), err)
	}
	// The idle ones are closed after the idle timeout.
	l, err := lines.ReadString('\n')
	if strings.TrimSpace(l) != "closed "+strconv.Itoa(flooders) {
		t.Fatalf("flooder: %q %v; want all %d connections closed by the agent", l, err, flooders)
	}
	if got := e.counter(t, "castellan_agent_idle_connections_closed_total", ""); got != perCaller {
		t.Fatalf("idle connections closed = %v, want %d", got, perCaller)
	}
}

func fetchStream(t *testing.T, ctx context.Context, conn *grpc.ClientConn) (workloadpb.SpiffeWorkloadAPI_FetchX509SVIDClient, error) {
	t.Helper()
	ctx = metadata.AppendToOutgoingContext(ctx, "workload.spiffe.io", "true")
	s, err := workloadpb.NewSpiffeWorkloadAPIClient(conn).FetchX509SVID(ctx, &workloadpb.X509SVIDRequest{})
	if err != nil {
		return nil, err
	}
	_, err = s.Recv()
	return s, err
}

// TestCallsPerCallerAreLimited: a caller may hold MaxStreamsPerCaller
// calls over all its connections; the next is ResourceExhausted, and a slot
// frees when a call ends.
func TestCallsPerCallerAreLimited(t *testing.T) {
	e := start(t, nil, func(c *Config) { c.Limits = Limits{MaxStreamsPerCaller: 2} })
	var cancels []context.CancelFunc
	for i := range 3 {
		conn, err := grpc.NewClient("unix://"+e.sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ctx, cancel := context.WithCancel(ctxT(t))
		cancels = append(cancels, cancel)
		_, err = fetchStream(t, ctx, conn)
		if i < 2 && err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		if i == 2 && (status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "limit 2")) {
			t.Fatalf("third call: %v; want ResourceExhausted naming the limit", err)
		}
	}
	if got := e.counter(t, "castellan_agent_limit_refusals_total", "streams_per_uid"); got != 1 {
		t.Fatalf("streams_per_uid refusals = %v, want 1", got)
	}
	cancels[0]()
	conn, err := grpc.NewClient("unix://"+e.sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	waitFor(t, 5*time.Second, "a call slot to free", func() bool {
		_, err := fetchStream(t, ctxT(t), conn)
		return err == nil
	})
}

func TestCallersAreKeyedByPodWhenAsked(t *testing.T) {
	root := t.TempDir()
	pid := strconv.Itoa(os.Getpid())
	if err := os.MkdirAll(filepath.Join(root, pid), 0o755); err != nil {
		t.Fatal(err)
	}
	const uid = "6f1c1f4e-6a3c-4bde-9c1e-2b7d5c8e9a01"
	cg := "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + strings.ReplaceAll(uid, "-", "_") + ".slice/cri-containerd-" + strings.Repeat("a", 64) + ".scope\n"
	if err := os.WriteFile(filepath.Join(root, pid, "cgroup"), []byte(cg), 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := newMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		byPod bool
		want  caller
	}{
		{false, caller{"uid", strconv.Itoa(os.Getuid())}},
		{true, caller{"pod", uid}},
	} {
		lm := newLimiter(Limits{ByPod: tc.byPod}, m, nil)
		lm.procRoot = root
		c1, _ := unixPair(t)
		got, err := lm.callerOf(c1)
		if err != nil || got != tc.want {
			t.Fatalf("ByPod=%v: caller %v %v, want %v", tc.byPod, got, err, tc.want)
		}
	}
}

// unixPair returns the two ends of a connected Unix socket.
func unixPair(t *testing.T) (*net.UnixConn, *net.UnixConn) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int) *net.UnixConn {
		f := os.NewFile(uintptr(fd), "pair")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c.(*net.UnixConn)
	}
	return conn(fds[0]), conn(fds[1])
}
