// Package attesttest runs real workload processes for the tests of the
// attestation packages (agent/attest and below): a copy of the test binary
// that connects to a Unix socket and holds the connection, or obeys
// commands (share it with a child, hand it on, keep it across execve,
// change uid). A test package using it calls Main from its TestMain, so
// that the test binary doubles as the helper process.
package attesttest

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// helperEnv names the socket a helper process connects to.
const helperEnv = "CASTELLAN_ATTEST_HELPER_SOCKET"

// Main doubles as the helper process: with helperEnv set, the binary
// connects to that socket and holds the connection until stdin closes (or,
// with helperModeEnv set, behaves as that mode says); otherwise it runs
// the tests.
func Main(m *testing.M) {
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

// Listen listens on a new Unix socket in a temporary directory, closed at
// the end of the test, and returns it and its path.
func Listen(t testing.TB) (*net.UnixListener, string) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "a.sock")
	lis, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = lis.Close() })
	return lis, sock
}

// Accept accepts one connection on lis within 10 seconds; it is closed at
// the end of the test.
func Accept(t testing.TB, lis *net.UnixListener) *net.UnixConn {
	t.Helper()
	_ = lis.SetDeadline(time.Now().Add(10 * time.Second))
	c, err := lis.AcceptUnix()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// CopyExe copies the test binary to a new path, as a distinct workload binary.
func CopyExe(t testing.TB) string {
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

// Spawn starts exe as the helper connecting to sock; closing the returned
// stdin writer lets it exit.
func Spawn(t testing.TB, exe, sock string) (*exec.Cmd, io.WriteCloser) {
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

// helperModeEnv selects a helper behaviour of the test binary: "cmd"
// connects to helperEnv's socket and obeys commands on stdin; "idle" holds
// whatever descriptors it inherited until stdin closes (or a minute).
const helperModeEnv = "CASTELLAN_ATTEST_HELPER_MODE"

// helperExecEnv names the executable the "exec" command runs.
const helperExecEnv = "CASTELLAN_ATTEST_HELPER_EXEC"

// commandHelper connects, prints "ready", then runs one command per stdin
// line, printing "ok" after each:
//
//	share   start a child that inherits the connection; keep it too
//	handoff start a child that inherits the connection; close ours
//	exec    keep the connection across execve of this binary (idle mode)
//	setuid  switch to uid and gid 65534
func commandHelper(sock string) int {
	conn, err := net.Dial("unix", sock)
	if err != nil {
		return 3
	}
	f, err := conn.(*net.UnixConn).File() // a dup, close-on-exec
	if err != nil {
		return 3
	}
	_ = conn.Close()
	fmt.Println("ready")
	var lifelines []*os.File // write ends of the children's stdin, kept open
	defer func() { _ = lifelines }()
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		switch in.Text() {
		case "share", "handoff":
			w, err := startHolder(f)
			if err != nil {
				return 4
			}
			lifelines = append(lifelines, w)
			if in.Text() == "handoff" {
				_ = f.Close()
			}
		case "exec":
			if _, err := unix.FcntlInt(f.Fd(), unix.F_SETFD, 0); err != nil {
				return 5
			}
			exe := os.Getenv(helperExecEnv)
			env := append(withoutEnv(helperModeEnv), helperModeEnv+"=idle")
			_ = syscall.Exec(exe, []string{exe}, env)
			return 6
		case "setuid":
			if syscall.Setgid(65534) != nil || syscall.Setuid(65534) != nil {
				return 7
			}
		}
		fmt.Println("ok")
	}
	return 0
}

// startHolder starts an idle child holding f and waits until it runs. The
// child's stdin is a pipe whose write end this process keeps (and never
// closes), so the child exits when this process does.
func startHolder(f *os.File) (*os.File, error) {
	self, _ := os.Executable()
	cmd := exec.Command(self)
	cmd.Env = append(withoutEnv(helperModeEnv), helperModeEnv+"=idle")
	cmd.ExtraFiles = []*os.File{f}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd.Stdin = r
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	_, err = bufio.NewReader(out).ReadString('\n')
	return w, err
}

// idleHelper prints "ok" and holds its descriptors until stdin closes or a
// minute passes.
func idleHelper() {
	fmt.Println("ok")
	done := make(chan struct{})
	go func() { _, _ = io.Copy(io.Discard, os.Stdin); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Minute):
	}
	os.Exit(0)
}

// CmdHelper is a running command helper (see StartCmdHelper).
type CmdHelper struct {
	t     testing.TB
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Reader
}

// StartCmdHelper starts exe as a command helper connected to sock, with
// attr, and waits until it has connected. It obeys Do's commands:
//
//	share   start a child that inherits the connection; keep it too
//	handoff start a child that inherits the connection; close ours
//	exec    keep the connection across execve of execTarget ("": exe itself)
//	setuid  switch to uid and gid 65534
func StartCmdHelper(t testing.TB, exe, sock string, attr *syscall.SysProcAttr, execTarget string) *CmdHelper {
	t.Helper()
	if execTarget == "" {
		execTarget = exe
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), helperEnv+"="+sock, helperModeEnv+"=cmd", helperExecEnv+"="+execTarget)
	cmd.SysProcAttr = attr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h := &CmdHelper{t: t, cmd: cmd, stdin: stdin, out: bufio.NewReader(out)}
	t.Cleanup(func() { _ = stdin.Close(); _ = cmd.Process.Kill(); _ = cmd.Wait() })
	h.expect("ready")
	return h
}

func (h *CmdHelper) expect(want string) {
	h.t.Helper()
	line, err := h.out.ReadString('\n')
	if strings.TrimSpace(line) != want {
		h.t.Fatalf("helper said %q (%v), want %q", line, err, want)
	}
}

// Do sends a command and waits for it to be done.
func (h *CmdHelper) Do(command string) {
	h.t.Helper()
	if _, err := fmt.Fprintln(h.stdin, command); err != nil {
		h.t.Fatal(err)
	}
	h.expect("ok")
}

// withoutEnv returns the environment without variable key.
func withoutEnv(key string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, key+"=") {
			env = append(env, kv)
		}
	}
	return env
}
