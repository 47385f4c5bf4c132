package integration_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/internal/freeport"

	"github.com/castellan-dev/castellan/integration/testbin"
)

// demoLauncher is a running cmd/castellan-demo and where it put things.
type demoLauncher struct {
	cmd        *exec.Cmd
	out        *demoBuffer
	exited     chan struct{}
	dir        string
	portBase   int
	agentHTTP  string // the agent's /metrics address
	serverHTTP string // the server's /metrics and /log/ address
}

// demoBuffer is an io.Writer safe for concurrent use.
type demoBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *demoBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *demoBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// demoURL is the productpage base URL of the launcher.
func (d *demoLauncher) demoURL() string { return "http://127.0.0.1:" + strconv.Itoa(d.portBase) }

// demoPort returns the Bookinfo port at offset from productpage's.
func (d *demoLauncher) demoPort(offset int) string {
	return "127.0.0.1:" + strconv.Itoa(d.portBase+offset)
}

// demoFreePort returns a loopback port that was free a moment ago.
func demoFreePort(t *testing.T) int {
	t.Helper()
	p, err := freeport.Port()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// demoFreePortRange returns the first of n consecutive free loopback ports.
func demoFreePortRange(t *testing.T, n int) int {
	t.Helper()
	base, err := freeport.Range(n)
	if err != nil {
		t.Fatal(err)
	}
	return base
}

// demoStart runs the launcher with a short SVID lifetime (and the extra
// launcher arguments) and waits until it reports that Bookinfo is up.
// Cleanup stops it with SIGINT, as a user's Ctrl-C does, and checks that no
// child outlived it.
func demoStart(t *testing.T, ttl time.Duration, extra ...string) *demoLauncher {
	t.Helper()
	var b testbin.Builder
	t.Cleanup(b.Cleanup)
	launcher := b.Path(t, "castellan-demo")
	d := &demoLauncher{out: &demoBuffer{}, exited: make(chan struct{}), dir: t.TempDir(), portBase: demoFreePortRange(t, 6),
		agentHTTP: "127.0.0.1:" + strconv.Itoa(demoFreePort(t)), serverHTTP: "127.0.0.1:" + strconv.Itoa(demoFreePort(t))}
	args := []string{"--dir", d.dir, "--svid-ttl", ttl.String(), "--bookinfo-port", strconv.Itoa(d.portBase),
		"--reviews", "v2,v3",
		"--server-listen", "127.0.0.1:" + strconv.Itoa(demoFreePort(t)),
		"--server-http-listen", d.serverHTTP,
		"--agent-http-listen", d.agentHTTP}
	if bin := os.Getenv("CASTELLAN_BIN"); bin != "" {
		args = append(args, "--bin", bin)
	}
	args = append(args, extra...)
	d.cmd = exec.Command(launcher, args...)
	d.cmd.Dir = testbin.RepoRoot() // the launcher builds missing binaries with go build
	d.cmd.Stdout, d.cmd.Stderr = d.out, d.out
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = d.cmd.Wait(); close(d.exited) }()
	t.Cleanup(func() { d.demoStop(t) })
	deadline := time.After(5 * time.Minute) // includes building the binaries
	for !strings.Contains(d.out.String(), "Press Ctrl-C to stop.") {
		select {
		case <-d.exited:
			t.Fatalf("castellan-demo exited before Bookinfo was up:\n%s\n%s", d.out, d.demoLogs())
		case <-deadline:
			t.Fatalf("castellan-demo not up after 5 minutes:\n%s\n%s", d.out, d.demoLogs())
		case <-time.After(200 * time.Millisecond):
		}
	}
	t.Logf("castellan-demo is up:\n%s", d.out)
	return d
}

// demoStop interrupts the launcher and checks it stopped every child.
func (d *demoLauncher) demoStop(t *testing.T) {
	t.Helper()
	pids := d.demoPIDs(t)
	_ = d.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-d.exited:
	case <-time.After(45 * time.Second):
		_ = syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
		<-d.exited
		t.Errorf("castellan-demo did not stop within 45s of SIGINT")
	}
	if code := d.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("castellan-demo exited with %d after SIGINT:\n%s", code, d.out)
	}
	for name, pid := range pids {
		if err := syscall.Kill(pid, 0); err == nil {
			t.Errorf("%s (pid %d) outlived castellan-demo", name, pid)
			_ = syscall.Kill(-pid, syscall.SIGKILL)
		}
	}
}

// demoPIDs reads the children the launcher recorded.
func (d *demoLauncher) demoPIDs(t *testing.T) map[string]int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(d.dir, "processes.json"))
	if err != nil {
		return nil
	}
	var pids map[string]int
	if err := json.Unmarshal(b, &pids); err != nil {
		t.Errorf("processes.json: %v", err)
	}
	return pids
}

// demoLogs returns the last lines of every child's log, for failures.
func (d *demoLauncher) demoLogs() string {
	var sb strings.Builder
	files, _ := filepath.Glob(filepath.Join(d.dir, "logs", "*.log"))
	for _, f := range files {
		b, _ := os.ReadFile(f)
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		fmt.Fprintf(&sb, "--- %s (last lines)\n%s\n", filepath.Base(f), strings.Join(lines[max(0, len(lines)-15):], "\n"))
	}
	return sb.String()
}
